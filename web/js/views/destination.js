// Step 4, a destination: its settings, "Export now", "Preview" (a dry run: nothing sent) and "Cancel export", pausing
// and resuming the schedule and the arrival trigger, "Delete destination"; its runs newest first, the chosen run's live
// progress, per-segment counts (predicted ones and merge-field changes for a preview), "Retry failed members" on the
// newest real run when it finished with failed members or untags, and the per-row report (a preview's: every change) with a filter and a CSV download.
import { ApiError, api, del, get, patch, post, request } from '../api.js';
import { announce, h, scrollTable, replace } from '../dom.js';
import { FINISHED, connectionLabel, dateTime, duration, number, statusLabel, triggerLabel } from '../format.js';
import { t } from '../i18n.js';
import { badge, loading, problem, steps, success } from './common.js';

const POLL_MS = 2000;
const BUSY = ['queued', 'running'];
const REPORT_PAGE = 100;
const CSV_PAGE = 50000;
const COUNT_COLUMNS = ['read', 'invalid', 'duplicates', 'created', 'updated', 'unchanged', 'refused', 'failed', 'tagged', 'untagged'];
const COUNT_KEYS = {
  read: 'counts.read', invalid: 'counts.invalid', duplicates: 'counts.duplicates', created: 'counts.created',
  updated: 'counts.updated', unchanged: 'counts.unchanged', refused: 'counts.refused', failed: 'counts.failed',
  tagged: 'counts.tagged', untagged: 'counts.untagged', fieldProblems: 'counts.fieldProblems',
  tagFailed: 'counts.tagFailed', untagHeld: 'counts.untagHeld', untagFailed: 'counts.untagFailed',
};
const SOURCE_KEYS = {
  validation: 'report.sourceValidation', field: 'report.sourceField', mailchimp: 'report.sourceMailchimp',
  failure: 'report.sourceFailure', tag: 'report.sourceTag', preview: 'report.sourcePreview',
};

export function render(root, ctx) {
  const view = { timer: null, stopped: false };
  const body = h('div', { id: 'destination-body' }, loading('destination-loading'));
  const heading = h('h1', { id: 'destination-title', text: t('destination.title') });
  root.append(steps(4, ctx.id), heading, body);
  load(view, body, heading, ctx);
  return () => {
    view.stopped = true;
    clearTimeout(view.timer);
  };
}

async function load(view, body, heading, ctx) {
  const id = encodeURIComponent(ctx.id);
  let destination;
  let runs;
  try {
    [destination, runs] = await Promise.all([get(`/destinations/${id}`), get(`/destinations/${id}/exports`)]);
  } catch (error) {
    if (!ctx.current()) return;
    replace(body, problem(error.status === 404 ? t('destination.notFound') : error.message),
      h('p', {}, h('a', { href: '#/destinations', text: t('nav.destinations') })));
    return;
  }
  if (!ctx.current()) return;
  heading.textContent = destination.displayName;
  build(view, body, ctx, destination, runs.exports || []);
}

function settings(destination) {
  const users = (destination.exportUsers || []).map((u) => u.email || u.name || u.id).join(', ') || t('destination.noUsers');
  const mapping = destination.mapping
    ? [`Email ← ${destination.mapping.email}`, ...Object.entries(destination.mapping.mergeFields || {}).map(([tag, column]) => `${tag} ← ${column}`)].join(' · ')
    : t('destination.notConfigured');
  const consent = destination.consent.accepted
    ? t('destination.consentAccepted', { who: destination.consent.acceptedBy || '–', when: dateTime(destination.consent.acceptedAt) })
    : t('destination.consentWithdrawn', { who: destination.consent.withdrawnBy || '–', when: dateTime(destination.consent.withdrawnAt) });
  const rows = [
    ['destination.audience', destination.audienceId],
    ['destination.connection', connectionLabel(destination.mailchimp)],
    ['destination.consent', consent],
    ['destination.segments', (destination.segments || []).join(', ') || t('destination.notConfigured')],
    ['destination.mapping', mapping],
    ['destination.exportUsers', users],
    ['destination.schedule', destination.schedule.enabled ? t('destination.on') : t('destination.paused')],
    ['destination.arrival', destination.exportOnArrival ? t('destination.on') : t('destination.paused')],
  ];
  return h('dl', { class: 'settings', id: 'destination-settings' },
    rows.map(([key, value]) => [h('dt', { text: t(key) }), h('dd', { text: value })]));
}

function build(view, body, ctx, destination, runs) {
  const id = encodeURIComponent(destination.id);
  const message = h('div', { id: 'destination-message' });
  const say = (node) => { replace(message, node); };
  // The newest real run (not a preview) still queued or running: it holds Export now and Preview, and is what Cancel
  // stops. A cancelled run still `cancelling` holds nothing (the API plans a new export after it is counted), and a
  // preview never takes the Cancel button from a real run.
  const active = () => runs.find((r) => !r.dryRun && BUSY.includes(r.status));

  // --- actions ---------------------------------------------------------------------------------------------------
  const exportNow = h('button', { type: 'button', class: 'button', id: 'export-now', text: t('destination.exportNow') });
  const previewRun = h('button', { type: 'button', class: 'button button--secondary', id: 'preview-export', text: t('destination.preview'),
    'aria-describedby': 'preview-hint' });
  const previewHint = h('p', { class: 'hint', id: 'preview-hint', text: t('destination.previewHint') });
  const cancelRun = h('button', { type: 'button', class: 'button button--danger', id: 'cancel-export', text: t('destination.cancelExport') });
  const toggleSchedule = h('button', { type: 'button', class: 'button button--secondary', id: 'toggle-schedule' });
  const toggleArrival = h('button', { type: 'button', class: 'button button--secondary', id: 'toggle-arrival' });
  const deleteButton = h('button', { type: 'button', class: 'button button--danger-quiet', id: 'delete-destination', text: t('destination.delete') });
  const drawActions = () => {
    const running = active();
    exportNow.disabled = Boolean(running) || destination.draft;
    previewRun.disabled = exportNow.disabled;
    cancelRun.hidden = !running;
    toggleSchedule.textContent = destination.schedule.enabled ? t('destination.pauseSchedule') : t('destination.resumeSchedule');
    toggleArrival.textContent = destination.exportOnArrival ? t('destination.pauseArrival') : t('destination.resumeArrival');
  };

  exportNow.addEventListener('click', async () => {
    exportNow.disabled = true;
    try {
      const started = await post(`/destinations/${id}/exports`);
      announce(t('destination.exportStarted'));
      say(success(t('destination.exportStarted'), 'export-started'));
      await refreshRuns(started.id);
    } catch (error) {
      say(problem(t('destination.exportRefused', { error: error.message }), 'export-refused'));
    } finally {
      drawActions();
    }
  });

  previewRun.addEventListener('click', async () => {
    previewRun.disabled = true;
    try {
      const started = await post(`/destinations/${id}/exports`, { dryRun: true });
      announce(t('destination.previewStarted'));
      say(success(t('destination.previewStarted'), 'preview-started'));
      await refreshRuns(started.id);
    } catch (error) {
      say(problem(t('destination.previewRefused', { error: error.message }), 'preview-refused'));
    } finally {
      drawActions();
    }
  });

  cancelRun.addEventListener('click', async () => {
    const running = active();
    if (!running) return;
    cancelRun.disabled = true;
    try {
      await post(`/exports/${encodeURIComponent(running.id)}/cancel`);
      announce(t('destination.cancelling'));
      say(success(t('destination.cancelling'), 'export-cancelling'));
      await refreshRuns(running.id);
    } catch (error) {
      say(problem(error.message, 'cancel-refused'));
    } finally {
      cancelRun.disabled = false;
      drawActions();
    }
  });

  const toggle = async (change, done) => {
    try {
      destination = await patch(`/destinations/${id}`, change);
      announce(done());
      say(success(done()));
      replace(settingsBox, settings(destination));
    } catch (error) {
      say(problem(error.message));
    }
    drawActions();
  };
  toggleSchedule.addEventListener('click', () => toggle({ schedule: { enabled: !destination.schedule.enabled } },
    () => (destination.schedule.enabled ? t('destination.scheduleResumed') : t('destination.schedulePaused'))));
  toggleArrival.addEventListener('click', () => toggle({ exportOnArrival: !destination.exportOnArrival },
    () => (destination.exportOnArrival ? t('destination.arrivalResumed') : t('destination.arrivalPaused'))));

  // Delete: a dialog saying what deletion does, focus kept inside it by the browser (showModal).
  const dialog = h('dialog', { id: 'delete-dialog', 'aria-labelledby': 'delete-title', 'aria-describedby': 'delete-text' },
    h('h2', { id: 'delete-title', text: t('destination.deleteTitle', { name: destination.displayName }) }),
    h('div', { id: 'delete-text' },
      h('p', { text: t('destination.deleteIntro') }),
      h('ul', {},
        h('li', { text: t('destination.deleteStops') }),
        h('li', { text: t('destination.deleteCredentials') }),
        h('li', { text: t('destination.deleteReports') }),
        h('li', { text: t('destination.deleteKeeps') }),
        h('li', { text: t('destination.deleteMailchimp') }))),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button button--danger', id: 'confirm-delete', text: t('destination.deleteConfirm') }),
      h('button', { type: 'button', class: 'button button--secondary', id: 'keep-destination', autofocus: true, text: t('destination.deleteKeep') })));
  deleteButton.addEventListener('click', () => dialog.showModal());
  dialog.querySelector('#keep-destination').addEventListener('click', () => { dialog.close(); deleteButton.focus(); });
  dialog.querySelector('#confirm-delete').addEventListener('click', async () => {
    try {
      await del(`/destinations/${id}`);
      dialog.close();
      announce(t('destination.deleted', { name: destination.displayName }));
      ctx.navigate('#/destinations');
    } catch (error) {
      dialog.close();
      say(problem(error.message, 'delete-refused'));
    }
  });

  const actions = h('div', { class: 'actions actions--bar', id: 'destination-actions' },
    exportNow, previewRun, cancelRun,
    ctx.isAdmin ? [toggleSchedule, toggleArrival,
      h('a', { class: 'button button--secondary', id: 'configure-link', href: `#/destinations/${id}/configure`, text: t('destination.configure') }),
      h('a', { class: 'button button--secondary', id: 'connection-link', href: `#/destinations/${id}/connect`, text: t('destination.connectionLink') }),
      deleteButton] : null);
  const settingsBox = h('div', {}, settings(destination));
  const runsBox = h('section', { class: 'section', id: 'runs-section', 'aria-labelledby': 'runs-title' },
    h('h2', { id: 'runs-title', text: t('runs.title') }));
  const runBox = h('section', { class: 'section', id: 'run-section', 'aria-labelledby': 'run-title' });
  const notes = destination.draft ? [problem(t('destination.draftNote'), 'draft-note'),
    ctx.isAdmin ? h('p', {}, h('a', { href: `#/destinations/${id}/configure`, text: t('list.finishSetup') })) : null] : [];
  replace(body, ...notes, settingsBox, actions, previewHint, message, runsBox, runBox, ctx.isAdmin ? dialog : null);
  drawActions();

  // --- runs ----------------------------------------------------------------------------------------------------------
  let chosen = ctx.params.get('run') || (runs[0] && runs[0].id) || null;

  function drawRuns() {
    if (!runs.length) {
      replace(runsBox, runsBox.firstChild, h('p', { id: 'runs-empty', text: t('runs.none') }));
      return;
    }
    const table = h('table', { class: 'table', id: 'runs-table' },
      h('caption', { class: 'visually-hidden', text: t('runs.caption') }),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: t('runs.started') }),
        h('th', { scope: 'col', text: t('runs.trigger') }),
        h('th', { scope: 'col', text: t('runs.status') }),
        ['read', 'created', 'updated', 'unchanged', 'invalid', 'refused', 'failed'].map((key) => h('th', { scope: 'col', class: 'num', text: t(COUNT_KEYS[key]) })),
        h('th', { scope: 'col', text: t('runs.duration') }))),
      h('tbody', {}, runs.map((run) => h('tr', { id: `run-row-${run.id}`, class: run.id === chosen ? 'is-chosen' : null, 'aria-current': run.id === chosen ? 'true' : null },
        h('th', { scope: 'row' }, h('a', { href: `#/destinations/${id}?run=${encodeURIComponent(run.id)}`, text: dateTime(run.startedAt || run.createdAt),
          onclick: (event) => { event.preventDefault(); choose(run.id, true); } })),
        h('td', { text: run.dryRun ? t('runs.previewTrigger', { trigger: triggerLabel(run.trigger) }) : triggerLabel(run.trigger) }),
        h('td', {}, badge(run.status)),
        ['read', 'created', 'updated', 'unchanged', 'invalid', 'refused', 'failed'].map((key) => h('td', { class: 'num', text: number(run.counts[key]) })),
        h('td', { text: duration(run.elapsedSeconds) })))));
    replace(runsBox, runsBox.firstChild, scrollTable(t('runs.caption'), table));
  }

  async function refreshRuns(focusRun) {
    try {
      runs = (await get(`/destinations/${id}/exports`)).exports || [];
    } catch (error) {
      say(problem(error.message));
      return;
    }
    if (view.stopped) return;
    if (focusRun) chosen = focusRun;
    drawRuns();
    drawActions();
    showRun();
  }

  function choose(runId, moveFocus) {
    chosen = runId;
    history.replaceState(null, '', `#/destinations/${id}?run=${encodeURIComponent(runId)}`);
    drawRuns();
    showRun(moveFocus);
  }

  // --- the chosen run ------------------------------------------------------------------------------------------------
  const report = { lines: [], next: null, filter: '', runId: null };
  // Which showRun is the current one: an answer to a poll an older one sent (a Cancel or a choice came meanwhile) is
  // dropped, so it neither draws an older state over a newer one nor starts a second poll loop.
  let generation = 0;

  function showRun(moveFocus) {
    clearTimeout(view.timer);
    const mine = ++generation;
    const run = runs.find((r) => r.id === chosen);
    if (!run) {
      replace(runBox);
      return;
    }
    const when = dateTime(run.startedAt || run.createdAt);
    const title = h('h2', { id: 'run-title', tabindex: '-1', text: run.dryRun ? t('run.previewTitle', { when }) : t('run.title', { when }) });
    const live = h('div', { id: 'run-live' });
    const segmentsBox = h('div', { id: 'run-segments' });
    const changesBox = h('div', { id: 'preview-changes' });
    const reportBox = h('div', { id: 'run-report' });
    replace(runBox, title, live, segmentsBox, changesBox, reportBox);
    if (moveFocus) title.focus();
    let lastStatus = null;
    let lastAnnounced = -1;

    const draw = (current) => {
      const c = current.counts || {};
      const total = current.chunks && current.chunks.total;
      const done = (current.chunks && current.chunks.done) || 0;
      const sent = c.created + c.updated + c.unchanged + c.refused + c.failed;
      const finished = FINISHED.includes(current.status);
      const parts = [h('p', {}, badge(current.status), ' ', h('span', { text: t('run.trigger', { trigger: triggerLabel(current.trigger) }) }))];
      if (current.dryRun) parts.push(h('p', { class: 'preview-note', id: 'preview-note', text: t('run.previewNote') }));
      if (current.retryOf) parts.push(linkedRun('run-retry-of', 'run.retryOf', current.retryOf));
      if (current.retriedBy) parts.push(linkedRun('run-retried-by', 'run.retriedBy', current.retriedBy));
      if (!finished) {
        const progress = h('progress', { id: 'run-progress', max: String(total || 1), 'aria-labelledby': 'run-progress-label' });
        if (total) progress.value = done; // without a total (planning) the bar is indeterminate
        let left = null;
        if (total && done && current.elapsedSeconds) left = (current.elapsedSeconds / done) * (total - done);
        const text = total
          ? t('run.progress', { done: number(done), total: number(total), sent: number(sent), rate: number(current.profilesPerSecond || 0), left: left === null ? '–' : duration(left) })
          : current.status === 'queued' ? t('run.queued') : current.status === 'cancelling' ? t('run.cancellingText') : t('run.planning');
        parts.push(h('p', { id: 'run-progress-label', class: 'progress-label', text: t('run.progressLabel') }), progress,
          h('p', { id: 'run-progress-text', role: 'status', 'aria-live': 'polite', text }));
        const percent = total ? Math.floor((done / total) * 4) : 0; // said aloud at each quarter, not every poll
        if (percent !== lastAnnounced && total) {
          lastAnnounced = percent;
          if (percent > 0) announce(t('run.percent', { percent: percent * 25 }));
        }
      } else {
        if (total && (current.status === 'succeeded' || current.status === 'completed_with_errors')) {
          // a run that went through stays with its bar full, rather than the bar vanishing at its last poll
          const progress = h('progress', { id: 'run-progress', max: String(total), 'aria-labelledby': 'run-progress-label' });
          progress.value = done;
          parts.push(h('p', { id: 'run-progress-label', class: 'progress-label', text: t('run.progressLabel') }), progress);
        }
        parts.push(h('p', { id: 'run-summary', text: current.dryRun
          ? t('run.previewFinished', { when: dateTime(current.finishedAt), took: duration(current.elapsedSeconds) })
          : t('run.finished', { when: dateTime(current.finishedAt), took: duration(current.elapsedSeconds), rate: number(current.profilesPerSecond || 0) }) }));
        if (retryable(current)) parts.push(retryButton(current));
      }
      if (current.message) parts.push(h('p', { class: 'notice', id: 'run-message', text: current.message }));
      const notices = Object.entries(c).filter(([key, value]) => ['fieldProblems', 'tagFailed', 'untagHeld', 'untagFailed'].includes(key) && value);
      if (notices.length) parts.push(h('p', { class: 'notice', id: 'run-notices', text: notices.map(([key, value]) => `${t(COUNT_KEYS[key])}: ${number(value)}`).join(' · ') }));
      replace(live, ...parts);
      const perSegment = current.dryRun ? t('run.perSegmentPreview') : t('run.perSegment');
      replace(segmentsBox, h('h3', { text: perSegment }), scrollTable(perSegment, h('table', { class: 'table', id: 'run-segments-table' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: t('run.segment') }), h('th', { scope: 'col', text: t('run.snapshot') }),
          COUNT_COLUMNS.map((key) => h('th', { scope: 'col', class: 'num', text: t(COUNT_KEYS[key]) })))),
        h('tbody', {}, (current.segments || []).map((part) => h('tr', {},
          h('th', { scope: 'row', text: part.segment }), h('td', { text: part.snapshot }),
          COUNT_COLUMNS.map((key) => h('td', { class: 'num', text: number(part.counts[key]) }))))),
        h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', text: t('run.total') }), h('td'),
          COUNT_COLUMNS.map((key) => h('td', { class: 'num', text: number(c[key]) })))))));
      drawChanges(current, changesBox);
      if (lastStatus !== current.status) {
        if (lastStatus !== null) announce(t('run.statusNow', { status: statusLabel(current.status) }));
        lastStatus = current.status;
      }
      return finished;
    };

    const poll = async () => {
      let current;
      try {
        current = (await api('GET', `/exports/${encodeURIComponent(run.id)}`)).body;
      } catch (error) {
        if (!view.stopped && mine === generation) view.timer = setTimeout(poll, POLL_MS * 2);
        return;
      }
      if (view.stopped || mine !== generation || chosen !== run.id) return;
      const index = runs.findIndex((r) => r.id === run.id);
      if (index >= 0) runs[index] = current;
      const finished = draw(current);
      if (finished) {
        drawRuns();
        drawActions();
        loadReport(current, reportBox, true);
        watchActive(run.id, mine);
      } else {
        drawActions();
        view.timer = setTimeout(poll, POLL_MS);
      }
    };
    if (draw(run)) {
      loadReport(run, reportBox, true);
      watchActive(run.id, mine);
    } else view.timer = setTimeout(poll, POLL_MS);
  }

  // While the chosen run is finished (or is a preview) and a real run is still queued or running, that run is followed
  // quietly, so that Export now, Preview and Cancel follow it when it ends.
  function watchActive(runId, mine) {
    const busy = active();
    if (!busy || busy.id === runId) return;
    view.timer = setTimeout(async () => {
      let current = null;
      try {
        current = (await api('GET', `/exports/${encodeURIComponent(busy.id)}`)).body;
      } catch { /* asked again at the next poll */ }
      if (view.stopped || mine !== generation || chosen !== runId) return;
      if (current) {
        const index = runs.findIndex((r) => r.id === busy.id);
        if (index >= 0) runs[index] = current;
        if (!BUSY.includes(current.status)) {
          drawRuns();
          drawActions();
        }
      }
      watchActive(runId, mine);
    }, POLL_MS);
  }

  // A line naming another run (the one this retries, or the retry of this one), with a link that shows it.
  function linkedRun(elementId, key, runId) {
    const other = runs.find((r) => r.id === runId);
    const label = other ? dateTime(other.startedAt || other.createdAt) : runId;
    const [before, after = ''] = t(key).split('{run}');
    return h('p', { id: elementId }, before,
      h('a', { href: `#/destinations/${id}?run=${encodeURIComponent(runId)}`, text: label,
        onclick: (event) => { event.preventDefault(); if (runs.some((r) => r.id === runId)) choose(runId, true); else refreshRuns(runId); } }),
      after);
  }

  // Offered only on the destination's newest real run (the API refuses a retry once a newer real run exists: its
  // data is newer, and a late retry would write stale data), finished, with failed members or failed untags, and not
  // retried yet.
  function retryable(run) {
    const newestReal = runs.find((r) => !r.dryRun);
    const c = run.counts || {};
    return !run.dryRun && Boolean(newestReal) && newestReal.id === run.id && FINISHED.includes(run.status)
      && ((c.failed || 0) > 0 || (c.untagFailed || 0) > 0) && !run.retriedBy;
  }

  // "Retry failed members": a new run (trigger retry) sending only the members this one counted failed (and the
  // untags that failed); the page follows it. The API's refusal (not finished, nothing failed, retried already, a
  // newer run, no longer kept) goes to the message.
  function retryButton(run) {
    const label = (run.counts.failed || 0) > 0 ? t('run.retryFailed', { n: number(run.counts.failed) })
      : t('run.retryUntags', { n: number(run.counts.untagFailed) });
    const button = h('button', { type: 'button', class: 'button', id: 'retry-failed', text: label });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const started = await post(`/exports/${encodeURIComponent(run.id)}/retry`);
        announce(t('run.retryStarted'));
        say(success(t('run.retryStarted'), 'retry-started'));
        await refreshRuns(started.id);
        history.replaceState(null, '', `#/destinations/${id}?run=${encodeURIComponent(started.id)}`);
      } catch (error) {
        say(problem(error.status === 410 ? t('run.retryGone') : t('run.retryRefused', { error: error.message }), 'retry-refused'));
        button.disabled = false;
      }
    });
    return h('div', { class: 'actions', id: 'retry-actions' }, button,
      h('p', { class: 'hint', id: 'retry-hint', text: t('run.retryHint') }));
  }

  // A preview's changes per segment: members that would get the segment's tag, lose it, and each merge field updated.
  function drawChanges(run, box) {
    const changes = run.dryRun && run.preview ? run.preview.segments || {} : null;
    if (!changes) {
      replace(box);
      return;
    }
    const names = Object.keys(changes);
    if (!names.length) {
      replace(box, h('h3', { text: t('run.previewChanges') }), h('p', { id: 'preview-no-changes', text: t('run.previewNoChanges') }));
      return;
    }
    const table = h('table', { class: 'table', id: 'preview-changes-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: t('run.segment') }),
        h('th', { scope: 'col', class: 'num', text: t('run.previewTag') }),
        h('th', { scope: 'col', class: 'num', text: t('run.previewUntag') }),
        h('th', { scope: 'col', text: t('run.previewFields') }))),
      h('tbody', {}, names.map((name) => {
        const change = changes[name] || {};
        const fields = Object.entries(change.mergeFields || {});
        return h('tr', {},
          h('th', { scope: 'row', text: name }),
          h('td', { class: 'num', text: number(change.tag || 0) }),
          h('td', { class: 'num', text: number(change.untag || 0) }),
          h('td', { text: fields.length ? fields.map(([tag, n]) => t('run.previewField', { tag, n: number(n) })).join(' · ') : t('run.previewFieldsNone') }));
      })));
    replace(box, h('h3', { text: t('run.previewChanges') }), h('p', { class: 'hint', text: t('run.previewChangesHint') }),
      scrollTable(t('run.previewChanges'), table));
  }

  // --- the per-row report --------------------------------------------------------------------------------------------
  // Which load of the report is the current one: an answer to an older load (the run was chosen again, or its last
  // poll ended it, while a page was on its way) is dropped, so its lines are not added to the newer load's.
  let reportGeneration = 0;

  async function loadReport(run, box, fresh) {
    const mine = ++reportGeneration;
    if (fresh) {
      report.lines = [];
      report.next = null;
      report.runId = run.id;
    }
    const problems = ['invalid', 'refused', 'failed', 'fieldProblems', 'tagFailed'].reduce((sum, key) => sum + ((run.counts || {})[key] || 0), 0);
    const changes = run.dryRun ? ['created', 'updated', 'refused', 'untagged'].reduce((sum, key) => sum + ((run.counts || {})[key] || 0), 0) : 0;
    if (!problems && !changes) { // a run cancelled or failed before sending anything did not send every row
      const stopped = run.status === 'cancelled' || run.status === 'failed';
      replace(box, h('h3', { text: t('report.title') }), h('p', { id: 'report-empty', text: run.dryRun ? t('report.nonePreview') : t(stopped ? 'report.noneStopped' : 'report.none') }));
      return;
    }
    try {
      const res = await request('GET', `/exports/${encodeURIComponent(run.id)}/errors`, {
        query: { limit: REPORT_PAGE, continuation: report.next || undefined }, accept: 'application/x-ndjson',
      });
      if (mine !== reportGeneration) return;
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        if (view.stopped || mine !== reportGeneration) return;
        replace(box, h('h3', { text: t('report.title') }), problem(res.status === 410 ? t('report.gone') : (body.error || String(res.status)), 'report-problem'));
        return;
      }
      const text = await res.text();
      if (mine !== reportGeneration) return;
      for (const line of text.split('\n')) if (line.trim()) report.lines.push(JSON.parse(line));
      report.next = res.headers.get('x-continuation');
    } catch (error) {
      if (view.stopped || mine !== reportGeneration) return;
      replace(box, h('h3', { text: t('report.title') }), problem(String(error.message || error)));
      return;
    }
    if (view.stopped || mine !== reportGeneration || report.runId !== run.id) return false;
    drawReport(run, box);
    return true; // drawn: "More" moves focus only then (not into a newer load's box)
  }

  function drawReport(run, box) {
    const filter = h('select', { id: 'report-filter' },
      h('option', { value: '', text: t('report.all') }),
      Object.entries(SOURCE_KEYS).filter(([value]) => value !== 'preview' || run.dryRun) // a preview's report also lists invalid rows
        .map(([value, key]) => h('option', { value, text: t(key) })));
    filter.value = report.filter;
    const shown = report.lines.filter((line) => !report.filter || line.source === report.filter);
    const count = h('p', { id: 'report-count', role: 'status', text: t('report.count', { shown: number(shown.length), loaded: number(report.lines.length) }) });
    filter.addEventListener('change', () => {
      report.filter = filter.value;
      drawReport(run, box);
      document.getElementById('report-filter').focus();
    });
    const table = h('table', { class: 'table table--report', id: 'report-table' },
      h('caption', { class: 'visually-hidden', text: run.dryRun ? t('report.previewTitle') : t('report.title') }),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: t('report.outcome') }), h('th', { scope: 'col', text: t('run.segment') }),
        h('th', { scope: 'col', text: t('report.file') }), h('th', { scope: 'col', class: 'num', text: t('report.row') }),
        h('th', { scope: 'col', text: t('report.email') }), h('th', { scope: 'col', text: t('report.reason') }))),
      h('tbody', {}, shown.map((line) => h('tr', {},
        h('td', { text: SOURCE_KEYS[line.source] ? t(SOURCE_KEYS[line.source]) : line.source }),
        h('td', { text: line.segment }),
        h('td', { text: String(line.partition || '').split('/').pop() }),
        h('td', { class: 'num', text: number(line.row) }),
        h('td', { text: line.email || '' }),
        h('td', { class: 'reason', text: line.column ? `${line.reason} (${line.column} → ${line.mergeTag})` : line.reason })))));
    const more = report.next ? h('button', { type: 'button', class: 'button button--secondary', id: 'report-more', text: t('report.more'),
      onclick: () => loadReport(run, box, false).then((drawn) => { if (!drawn) return; const next = document.getElementById('report-more') || document.getElementById('report-filter'); if (next) next.focus(); }) }) : null;
    const download = h('button', { type: 'button', class: 'button button--secondary', id: 'download-csv', text: run.dryRun ? t('report.downloadPreview') : t('report.download') });
    const downloadNote = h('p', { id: 'download-status', role: 'status' });
    download.addEventListener('click', () => downloadCsv(run, download, downloadNote));
    replace(box,
      h('h3', { text: run.dryRun ? t('report.previewTitle') : t('report.title') }),
      h('p', { class: 'hint', text: run.dryRun ? t('report.previewHint') : t('report.hint') }),
      h('div', { class: 'report-tools' },
        h('div', { class: 'field field--inline' }, h('label', { for: 'report-filter', text: t('report.filter') }), filter),
        download),
      downloadNote, count,
      scrollTable(t('report.title'), table),
      more);
  }

  async function downloadCsv(run, button, note) {
    button.disabled = true;
    note.textContent = t('report.downloading');
    const parts = [];
    let continuation;
    let filename = `export-${run.id}-errors.csv`;
    try {
      for (;;) {
        const res = await request('GET', `/exports/${encodeURIComponent(run.id)}/errors`, {
          query: { format: 'csv', limit: CSV_PAGE, continuation }, accept: 'text/csv',
        });
        if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || String(res.status));
        const named = /filename="([^"]+)"/.exec(res.headers.get('Content-Disposition') || '');
        if (named) filename = named[1];
        parts.push(await res.blob());
        continuation = res.headers.get('x-continuation');
        if (!continuation) break;
      }
      const file = URL.createObjectURL(new Blob(parts, { type: 'text/csv;charset=utf-8' }));
      const link = h('a', { href: file, download: filename, class: 'visually-hidden', text: filename });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(file), 60000);
      note.textContent = t('report.downloaded', { file: filename });
    } catch (error) {
      note.textContent = t('report.downloadFailed', { error: error.message });
    } finally {
      button.disabled = false;
    }
  }

  drawRuns();
  showRun(false);
}
