// Step 1, "Export destinations": each destination with its last run, and "Add destination".
import { ApiError, get } from '../api.js';
import { h, scrollTable, replace } from '../dom.js';
import { connectionLabel, dateTime, number } from '../format.js';
import { t } from '../i18n.js';
import { badge, loading, problem, steps } from './common.js';

function lastRunCell(run) {
  if (run === undefined) return h('td', { class: 'muted', text: t('app.loading') });
  if (run === null) return h('td', { class: 'muted', text: t('list.neverRun') });
  if (run instanceof Error) return h('td', { class: 'muted', text: t('list.runsUnavailable') });
  const c = run.counts || {};
  return h('td', {},
    badge(run.status), ' ',
    h('span', { class: 'nowrap', text: dateTime(run.finishedAt || run.startedAt || run.createdAt) }),
    h('br'),
    h('span', { class: 'small', text: t('list.runCounts', {
      read: number(c.read), created: number(c.created), updated: number(c.updated), failed: number((c.failed || 0) + (c.refused || 0) + (c.invalid || 0)),
    }) }));
}

function row(destination, run, isAdmin) {
  const id = encodeURIComponent(destination.id);
  const name = h('a', { href: `#/destinations/${id}`, id: `destination-link-${destination.id}`, text: destination.displayName });
  const draft = destination.draft
    ? h('span', { class: 'tag' }, t('list.draft'), isAdmin ? [' ', h('a', { href: `#/destinations/${id}/configure`, text: t('list.finishSetup') })] : null)
    : null;
  const schedule = [
    destination.schedule && destination.schedule.enabled ? t('list.scheduleOn') : t('list.scheduleOff'),
    destination.exportOnArrival ? t('list.arrivalOn') : t('list.arrivalOff'),
  ].join(' · ');
  return h('tr', { id: `destination-row-${destination.id}` },
    h('th', { scope: 'row' }, name, draft ? [h('br'), draft] : null),
    h('td', {}, h('code', { text: destination.audienceId })),
    h('td', { text: connectionLabel(destination.mailchimp) }),
    h('td', { text: (destination.segments || []).join(', ') || '–' }),
    h('td', { text: schedule }),
    lastRunCell(run));
}

export function render(root, ctx) {
  const body = h('div', { id: 'destinations-body' }, loading('destinations-loading'));
  root.append(
    steps(1, null),
    h('div', { class: 'title-row' },
      h('h1', { id: 'destinations-title', text: t('list.title') }),
      ctx.isAdmin ? h('a', { class: 'button', id: 'add-destination', href: '#/destinations/new', text: t('list.add') }) : null),
    h('p', { class: 'lead', text: ctx.isAdmin ? t('list.intro') : t('list.introOperator') }),
    body);
  load(body, ctx);
}

async function load(body, ctx) {
  let destinations;
  try {
    destinations = (await get('/destinations')).destinations || [];
  } catch (error) {
    if (!ctx.current()) return;
    replace(body, problem(t('list.loadFailed', { error: error instanceof ApiError ? error.message : String(error) })));
    return;
  }
  if (!ctx.current()) return;
  if (!destinations.length) {
    replace(body, h('p', { id: 'destinations-empty', text: ctx.isAdmin ? t('list.emptyAdmin') : t('list.emptyOperator') }));
    return;
  }
  destinations.sort((a, b) => a.displayName.localeCompare(b.displayName));
  const runs = new Map();
  const tbody = h('tbody');
  const draw = () => replace(tbody, ...destinations.map((d) => row(d, runs.get(d.id), ctx.isAdmin)));
  draw();
  const table = h('table', { class: 'table', id: 'destinations-table' },
    h('caption', { class: 'visually-hidden', text: t('list.caption') }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: t('list.name') }),
      h('th', { scope: 'col', text: t('list.audience') }),
      h('th', { scope: 'col', text: t('list.connection') }),
      h('th', { scope: 'col', text: t('list.segments') }),
      h('th', { scope: 'col', text: t('list.triggers') }),
      h('th', { scope: 'col', text: t('list.lastRun') }))),
    tbody);
  replace(body, scrollTable(t('list.caption'), table));
  await Promise.all(destinations.map(async (d) => {
    try {
      const list = (await get(`/destinations/${encodeURIComponent(d.id)}/exports`, { query: { top: 1 } })).exports || [];
      runs.set(d.id, list[0] || null);
    } catch (error) {
      runs.set(d.id, error);
    }
  }));
  if (ctx.current()) draw();
}
