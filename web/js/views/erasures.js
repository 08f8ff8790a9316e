// "Erasure requests" (admins only): addresses typed one a line, a confirmation saying what erasure does (a permanent
// deletion from every audience of every destination, not to be undone), then the requests newest first with their
// status, who asked and per-audience outcomes (with the audiences no destination reaches any more, to erase by hand),
// polled while one is queued or running. The addresses leave the page with the
// request: the text area is emptied once sent and they are never put in the URL or kept by the view.
import { post, get } from '../api.js';
import { announce, field, h, replace, setFieldError } from '../dom.js';
import { dateTime, number } from '../format.js';
import { t } from '../i18n.js';
import { badge, errorSummary, hideSummary, loading, problem, success } from './common.js';

const POLL_MS = 2000;
const RUNNING = ['queued', 'running'];
// Per-audience outcomes as the API counts them (keys listed so the strings test finds each).
const COUNT_KEYS = {
  deleted: 'erasures.deleted', alreadyGone: 'erasures.alreadyGone', refused: 'erasures.refused', pending: 'erasures.pending',
};
// An audience only a deleted destination wrote to: the platform holds no credentials for it any more, so the admin
// erases these people by hand in Mailchimp. Shown only when there are some, with what to do.
const UNREACHABLE = 'unreachable';

// Who asked: the admin's Entra object id for a request made through the API ("you" when it is the signed-in admin),
// "storage:<file name>" for a file dropped in the erasure folder. Older requests recorded a name or an address:
// shown as they are.
function requester(requestedBy, me) {
  const who = String(requestedBy || '');
  if (!who) return '–';
  if (who.startsWith('storage:')) return t('erasures.byPlatform', { file: who.slice('storage:'.length) });
  if (me && me.id && who === me.id) return t('erasures.byYou');
  if (/^[0-9a-f][0-9a-f-]{15,}$/i.test(who)) return t('erasures.byAdmin', { id: who.slice(0, 8) });
  return who;
}

function addressesOf(text) {
  // [line number, address] of every line that is not blank
  return text.split('\n').map((line, index) => [index + 1, line.trim()]).filter(([, line]) => line);
}

export function render(root, ctx) {
  const view = { timer: null, stopped: false };
  const summary = errorSummary('erasure-errors');
  const message = h('div', { id: 'erasure-message' });
  const say = (node) => { replace(message, node); };
  const textarea = h('textarea', { rows: '6', autocomplete: 'off', spellcheck: 'false', 'aria-required': 'true' });
  const review = h('button', { type: 'submit', class: 'button button--danger', id: 'erasure-review', text: t('erasures.review') });
  const form = h('form', { id: 'erasure-form', novalidate: true },
    summary,
    field({ id: 'erasure-emails', label: t('erasures.addresses'), hint: t('erasures.addressesHint'), control: textarea }),
    h('div', { class: 'actions' }, review));

  const dialogText = h('p', { id: 'erasure-dialog-text' });
  const confirm = h('button', { type: 'button', class: 'button button--danger', id: 'confirm-erasure', text: t('erasures.confirm') });
  const keep = h('button', { type: 'button', class: 'button button--secondary', id: 'cancel-erasure', autofocus: true, text: t('erasures.keep') });
  const dialog = h('dialog', { id: 'erasure-dialog', 'aria-labelledby': 'erasure-dialog-title', 'aria-describedby': 'erasure-dialog-text erasure-dialog-undo' },
    h('h2', { id: 'erasure-dialog-title', text: t('erasures.confirmTitle') }),
    dialogText,
    h('p', { id: 'erasure-dialog-undo', class: 'problem', text: t('erasures.cannotUndo') }),
    h('div', { class: 'actions' }, confirm, keep));

  const listBox = h('section', { class: 'section', id: 'erasures-section', 'aria-labelledby': 'erasures-list-title' },
    h('h2', { id: 'erasures-list-title', text: t('erasures.listTitle') }), loading('erasures-loading'));

  root.append(
    h('h1', { id: 'erasures-title', text: t('erasures.title') }),
    h('p', { class: 'lead', id: 'erasures-intro', text: t('erasures.intro') }),
    form, message, listBox, dialog);

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    hideSummary(summary);
    setFieldError('erasure-emails', null);
    const count = addressesOf(textarea.value).length;
    if (!count) {
      setFieldError('erasure-emails', t('erasures.required'));
      textarea.focus();
      return;
    }
    dialogText.textContent = t('erasures.confirmText', { n: number(count) });
    dialog.showModal();
  });
  keep.addEventListener('click', () => { dialog.close(); review.focus(); });
  confirm.addEventListener('click', async () => {
    const lines = addressesOf(textarea.value);
    confirm.disabled = true;
    try {
      const started = await post('/erasures', { emails: lines.map(([, address]) => address) });
      textarea.value = ''; // sent: the page keeps no address
      dialog.close();
      announce(t('erasures.requested', { n: number(started.addresses) }));
      say(success(t('erasures.requested', { n: number(started.addresses) }), 'erasure-requested'));
      await refresh();
      const row = document.getElementById(`erasure-row-${started.id}`);
      if (row) row.querySelector('th').focus();
    } catch (error) {
      dialog.close();
      // The API names a wrong address by its position (emails[i]), never by the address: shown as its line here.
      const details = (error.details || []).map((detail) => {
        const at = /^emails\[(\d+)\]$/.exec(detail.field || '');
        return at && lines[Number(at[1])] ? t('erasures.lineProblem', { line: lines[Number(at[1])][0], problem: detail.message }) : detail.message;
      });
      replace(summary, h('p', { class: 'problem__title', text: t('erasures.refusedRequest', { error: error.message }) }),
        details.length ? h('ul', {}, details.map((text) => h('li', { text }))) : null);
      summary.hidden = false;
      summary.focus();
    } finally {
      confirm.disabled = false;
    }
  });

  function outcomes(erasure) {
    const audiences = erasure.audiences || [];
    if (!audiences.length) return h('span', { class: 'muted', text: RUNNING.includes(erasure.status) ? t('erasures.noAudiencesYet') : t('erasures.noAudiences') });
    return h('ul', { class: 'outcomes' }, audiences.map((audience) => {
      const counts = Object.entries(COUNT_KEYS).map(([name, key]) => `${t(key)}: ${number(audience[name] || 0)}`);
      const unreachable = audience[UNREACHABLE] || 0;
      if (unreachable) counts.push(`${t('erasures.unreachable')}: ${number(unreachable)}`);
      return h('li', { 'data-audience': audience.audienceId },
        h('span', { text: t('erasures.audience', { audience: audience.audienceId }) }), ' ', counts.join(' · '),
        unreachable ? h('p', { class: 'hint erasure-unreachable', text: t('erasures.unreachableHint', { audience: audience.audienceId }) }) : null);
    }));
  }

  function draw(erasures) {
    const title = listBox.firstChild;
    if (!erasures.length) {
      replace(listBox, title, h('p', { id: 'erasures-empty', text: t('erasures.none') }));
      return;
    }
    const table = h('table', { class: 'table', id: 'erasures-table' },
      h('caption', { class: 'visually-hidden', text: t('erasures.listTitle') }),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: t('erasures.requestedAt') }),
        h('th', { scope: 'col', text: t('erasures.requestedBy') }),
        h('th', { scope: 'col', class: 'num', text: t('erasures.count') }),
        h('th', { scope: 'col', text: t('erasures.status') }),
        h('th', { scope: 'col', text: t('erasures.outcomes') }))),
      h('tbody', {}, erasures.map((erasure) => h('tr', { id: `erasure-row-${erasure.id}` },
        h('th', { scope: 'row', tabindex: '-1', text: dateTime(erasure.createdAt) }),
        h('td', { class: 'requested-by', title: erasure.requestedBy || null, text: requester(erasure.requestedBy, ctx.me) }),
        h('td', { class: 'num', text: number(erasure.addresses) }),
        h('td', {}, badge(erasure.status), erasure.message ? h('p', { class: 'hint', text: erasure.message }) : null),
        h('td', {}, outcomes(erasure))))));
    replace(listBox, title, table);
  }

  let lastRunning = null;
  const outcomesOf = new Map(); // request id -> {status, audiences}: counts per audience, no hash or address
  // Which refresh is the current one: an older one answered late (the list asked for again after a request was sent)
  // neither draws the older list over the newer nor keeps a second poll loop going.
  let generation = 0;
  async function refresh() {
    clearTimeout(view.timer);
    const mine = ++generation;
    let erasures;
    try {
      erasures = (await get('/erasures')).erasures || [];
    } catch (error) {
      if (view.stopped || mine !== generation) return;
      replace(listBox, listBox.firstChild, problem(t('erasures.loadFailed', { error: error.message }), 'erasures-problem'));
      view.timer = setTimeout(refresh, POLL_MS * 2);
      return;
    }
    if (view.stopped || mine !== generation) return; // a newer refresh has asked already
    // The list leaves out the outcomes (GET /erasures/{id} has them): asked for each request not seen finished yet.
    await Promise.all(erasures.map(async (erasure) => {
      const known = outcomesOf.get(erasure.id);
      if (known && known.status === erasure.status && !RUNNING.includes(erasure.status)) return;
      try {
        const detail = await get(`/erasures/${encodeURIComponent(erasure.id)}`);
        if (mine !== generation) return; // a newer refresh has asked for it again
        outcomesOf.set(erasure.id, { status: detail.status, audiences: detail.audiences || [] });
      } catch { /* shown from the list alone; asked again at the next poll */ }
    }));
    if (view.stopped || mine !== generation || !ctx.current()) return;
    for (const erasure of erasures) {
      const known = outcomesOf.get(erasure.id);
      if (known && !(erasure.audiences || []).length) erasure.audiences = known.audiences;
    }
    draw(erasures);
    const running = erasures.filter((e) => RUNNING.includes(e.status)).length;
    if (lastRunning && !running) announce(t('erasures.allFinished'));
    lastRunning = running;
    if (running) view.timer = setTimeout(refresh, POLL_MS);
  }
  refresh();

  return () => {
    view.stopped = true;
    clearTimeout(view.timer);
    textarea.value = '';
  };
}
