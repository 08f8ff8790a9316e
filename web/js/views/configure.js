// Step 3, "Configure the connector": the segments (profile counts against the per-export limit), data matching
// (Email and further attributes mapped to audience merge fields, creating missing ones), and under "Advanced" the
// tag prefix, the status for new contacts and whether people whose address was erased are exported again. "Save",
// "Save and export".
import { ApiError, get, patch, post } from '../api.js';
import { announce, clearFieldErrors, field, h, setFieldError, replace } from '../dom.js';
import { dateTime, number } from '../format.js';
import { t } from '../i18n.js';
import { errorSummary, hideSummary, loading, problem, showProblems, steps } from './common.js';

const MERGE_TAG = /^[A-Z0-9_]{1,10}$/;
const NEW = '__new__';
const GUESSES = {
  FNAME: ['firstname', 'first_name', 'first name', 'givenname', 'given_name', 'prenom', 'prénom'],
  LNAME: ['lastname', 'last_name', 'last name', 'surname', 'familyname', 'family_name', 'nom'],
};

const fold = (text) => String(text).toLocaleLowerCase('en');

export function render(root, ctx) {
  const body = h('div', { id: 'configure-body' }, loading('configure-loading'));
  root.append(steps(3, ctx.id), h('h1', { id: 'configure-title', text: t('configure.title') }), body);
  const id = encodeURIComponent(ctx.id);
  Promise.all([
    get(`/destinations/${id}`),
    get('/segments'),
  ]).then(async ([destination, catalog]) => {
    let audience = null;
    let audienceError = null;
    try {
      audience = await post('/mailchimp/audience', { audienceId: destination.audienceId, destinationId: destination.id });
    } catch (error) {
      audienceError = error;
    }
    if (ctx.current()) build(body, ctx, destination, catalog, audience, audienceError);
  }, (error) => {
    if (!ctx.current()) return;
    replace(body, problem(error.status === 404 ? t('destination.notFound') : t('configure.loadFailed', { error: error.message })),
      h('p', {}, h('a', { href: '#/destinations', text: t('nav.destinations') })));
  });
}

function build(body, ctx, destination, catalog, audience, audienceError) {
  const segments = catalog.segments || [];
  const limit = catalog.maxProfilesPerExport;
  const byName = new Map(segments.map((s) => [fold(s.name), s]));
  const selected = new Map();
  for (const name of destination.segments || []) selected.set(fold(name), (byName.get(fold(name)) || {}).name || name);
  const mergeFields = audience ? audience.mergeFields : [];
  const summary = errorSummary('configure-errors');
  const notes = [];
  if (audienceError) {
    notes.push(problem(t('configure.audienceFailed', { error: audienceError.message })),
      h('p', {}, h('a', { href: `#/destinations/${encodeURIComponent(destination.id)}/connect`, text: t('configure.backToConnect') })));
  } else {
    notes.push(h('p', { class: 'lead', id: 'configure-audience', text: t('configure.audience', {
      name: audience.audience.name, id: destination.audienceId, members: number(audience.audience.memberCount),
    }) }));
  }

  // --- segments ------------------------------------------------------------------------------------------------
  const total = h('p', { id: 'profile-total', class: 'total', role: 'status', 'aria-live': 'polite' });
  const segmentList = h('ul', { class: 'choices', id: 'segment-list' });
  const known = [...segments];
  for (const [key, name] of selected) {
    if (!byName.has(key)) known.push({ name, usable: false, snapshot: null, columns: [], profiles: null, missing: true });
  }
  known.forEach((segment, index) => {
    const box = h('input', { type: 'checkbox', id: `segment-${index}`, value: segment.name, checked: selected.has(fold(segment.name)),
      disabled: Boolean(segment.problem) && !selected.has(fold(segment.name)) });
    const detailId = `segment-${index}-detail`;
    box.setAttribute('aria-describedby', detailId);
    let detail;
    if (segment.problem) detail = t('configure.segmentProblem', { problem: segment.problem });
    else if (segment.missing) detail = t('configure.segmentMissing');
    else if (!segment.snapshot) detail = t('configure.segmentWaiting', { waiting: segment.waiting || '' });
    else detail = t('configure.segmentDetail', { profiles: number(segment.profiles), when: dateTime(segment.snapshotTime) });
    box.addEventListener('change', () => {
      if (box.checked) selected.set(fold(segment.name), segment.name);
      else selected.delete(fold(segment.name));
      setFieldError('segments', null);
      refreshTotal();
      refreshColumns();
    });
    segmentList.append(h('li', { class: segment.problem ? 'choice choice--unusable' : 'choice' },
      box, h('label', { for: box.id }, h('span', { class: 'choice__name', text: segment.name })),
      h('p', { class: 'hint', id: detailId, text: detail })));
  });
  if (!known.length) segmentList.append(h('li', { class: 'muted', text: t('configure.noSegments', { container: catalog.container || '' }) }));
  const segmentsSet = h('fieldset', { class: 'fieldset', id: 'segments', tabindex: '-1' },
    h('legend', { text: t('configure.segmentsTitle') }),
    h('p', { class: 'hint', id: 'segments-hint', text: t('configure.segmentsHint') }),
    segmentList, total,
    h('p', { class: 'field-error', id: 'segments-error', hidden: true }));
  segmentsSet.setAttribute('aria-describedby', 'segments-hint');

  function refreshTotal() {
    let profiles = 0;
    for (const key of selected.keys()) profiles += (byName.get(key) || {}).profiles || 0;
    const over = limit && profiles > limit;
    total.className = over ? 'total total--over' : 'total';
    total.textContent = t(over ? 'configure.totalOver' : 'configure.total', {
      segments: number(selected.size), profiles: number(profiles), limit: number(limit),
    });
  }

  // --- columns the selected segments share -----------------------------------------------------------------------
  function columns() {
    let shared = null;
    for (const key of selected.keys()) {
      const segment = byName.get(key);
      if (!segment || !segment.snapshot || segment.problem) continue;
      const names = new Map(segment.columns.map((c) => [fold(c.name), c]));
      shared = shared === null ? names : new Map([...shared].filter(([k]) => names.has(k)));
    }
    return shared === null ? [] : [...shared.values()];
  }

  const emailSelect = h('select', {});
  const emailField = field({ id: 'map-email', label: t('configure.email'), hint: t('configure.emailHint'), control: emailSelect, required: true });
  const attributes = h('div', { id: 'attributes', class: 'attributes' });
  const rows = [];
  let counter = 0;

  function fillColumns(select, current, placeholder) {
    const available = columns();
    const options = [h('option', { value: '', text: placeholder })];
    for (const column of available) options.push(h('option', { value: column.name, text: column.name }));
    if (current && !available.some((c) => fold(c.name) === fold(current))) {
      options.push(h('option', { value: current, text: t('configure.columnNotShared', { column: current }) }));
    }
    replace(select, ...options);
    select.value = current || '';
    select.disabled = !available.length && !current;
  }

  function columnType(name) {
    for (const key of selected.keys()) {
      const found = ((byName.get(key) || {}).columns || []).find((c) => fold(c.name) === fold(name));
      if (found) return found.mailchimpType;
    }
    return 'text';
  }

  // A column for a field not chosen yet: Email, FirstName, LastName by their usual names.
  function guess(names, loose) {
    const available = columns();
    const found = available.find((c) => names.includes(fold(c.name)))
      || (loose ? available.find((c) => names.some((n) => fold(c.name).includes(n))) : null);
    return found ? found.name : '';
  }

  function refreshColumns() {
    fillColumns(emailSelect, emailSelect.value || (destination.mapping && destination.mapping.email) || guess(['email', 'emailaddress', 'e-mail', 'mail'], true), t('configure.chooseColumn'));
    for (const row of rows) {
      const usual = GUESSES[row.tag.value];
      fillColumns(row.column, row.column.value || row.initialColumn || (usual ? guess(usual) : ''), t('configure.chooseColumn'));
      row.refreshType();
    }
    const hint = document.getElementById('map-email-hint');
    if (hint) hint.textContent = selected.size ? t('configure.emailHint') : t('configure.chooseSegmentsFirst');
  }

  function addRow(tag, column, focus) {
    const n = counter++;
    const row = { n, initialColumn: column };
    const known = mergeFields.some((f) => f.tag === tag);
    row.tag = h('select', {},
      h('option', { value: '', text: t('configure.chooseField') }),
      mergeFields.map((f) => h('option', { value: f.tag, text: t('configure.fieldOption', { tag: f.tag, name: f.name, type: f.type }) })),
      h('option', { value: NEW, text: t('configure.newField') }));
    row.tag.value = tag && known ? tag : tag ? NEW : '';
    row.newTag = h('input', { type: 'text', maxlength: '10', autocomplete: 'off', spellcheck: 'false', value: tag && !known ? tag : '' });
    row.column = h('select', {});
    row.typeNote = h('p', { class: 'hint', id: `attr-${n}-type` });
    const newField = field({ id: `attr-${n}-new`, label: t('configure.newTag'), hint: t('configure.newTagHint'), control: row.newTag });
    row.refreshType = () => {
      const creating = row.tag.value === NEW;
      newField.hidden = !creating;
      row.typeNote.textContent = creating ? t('configure.createdAs', { type: columnType(row.column.value || '') }) : '';
      row.typeNote.hidden = !creating;
    };
    row.tag.addEventListener('change', () => { setFieldError(`attr-${n}-tag`, null); row.refreshType(); if (row.tag.value === NEW) row.newTag.focus(); });
    row.column.addEventListener('change', () => { setFieldError(`attr-${n}-column`, null); row.refreshType(); });
    const titleId = `attr-${n}-title`;
    row.element = h('div', { class: 'attribute', role: 'group', 'aria-labelledby': titleId, id: `attr-${n}` },
      h('p', { class: 'attribute__title', id: titleId, text: t('configure.attributeTitle', { n: rows.length + 1 }) }),
      h('div', { class: 'attribute__fields' },
        field({ id: `attr-${n}-tag`, label: t('configure.mergeField'), control: row.tag }),
        newField,
        field({ id: `attr-${n}-column`, label: t('configure.column'), control: row.column })),
      row.typeNote,
      h('button', { type: 'button', class: 'link-button', id: `attr-${n}-remove`, text: t('configure.removeAttribute'),
        'aria-label': t('configure.removeAttributeNamed', { n: rows.length + 1 }),
        onclick: () => {
          rows.splice(rows.indexOf(row), 1);
          row.element.remove();
          renumber();
          announce(t('configure.attributeRemoved'));
          document.getElementById('add-attribute').focus();
        } }));
    rows.push(row);
    attributes.append(row.element);
    fillColumns(row.column, column || '', t('configure.chooseColumn'));
    row.refreshType();
    if (focus) row.tag.focus();
    return row;
  }

  function renumber() {
    rows.forEach((row, index) => {
      document.getElementById(`attr-${row.n}-title`).textContent = t('configure.attributeTitle', { n: index + 1 });
      document.getElementById(`attr-${row.n}-remove`).setAttribute('aria-label', t('configure.removeAttributeNamed', { n: index + 1 }));
    });
  }

  const addAttribute = h('button', { type: 'button', class: 'button button--secondary', id: 'add-attribute', text: t('configure.addAttribute'),
    onclick: () => {
      const used = new Set(rows.map((r) => (r.tag.value === NEW ? r.newTag.value : r.tag.value)));
      const next = mergeFields.find((f) => !used.has(f.tag));
      addRow(next ? next.tag : '', '', true);
      announce(t('configure.attributeAdded'));
    } });

  // --- advanced --------------------------------------------------------------------------------------------------
  const prefix = h('input', { type: 'text', maxlength: '50', autocomplete: 'off', value: destination.tagPrefix || '' });
  const example = h('span', { id: 'tag-example' });
  const showExample = () => {
    const first = selected.values().next().value || 'HighValueCustomers';
    example.textContent = t('configure.tagExample', { tag: `${prefix.value}${first}` });
  };
  prefix.addEventListener('input', showExample);
  const optin = audience ? audience.audience.doubleOptIn : null;
  const status = h('select', {},
    h('option', { value: '', text: optin === null ? t('configure.statusFollow') : t(optin ? 'configure.statusFollowPending' : 'configure.statusFollowSubscribed') }),
    h('option', { value: 'subscribed', text: t('configure.statusSubscribed') }),
    h('option', { value: 'pending', text: t('configure.statusPending') }),
    h('option', { value: 'transactional', text: t('configure.statusTransactional') }));
  status.value = destination.statusForNew || '';
  const reAdd = h('input', { type: 'checkbox', id: 're-add-erased', checked: Boolean(destination.reAddErased), 'aria-describedby': 're-add-erased-hint' });
  const advanced = h('details', { class: 'advanced', id: 'advanced', open: Boolean(destination.tagPrefix || destination.statusForNew || destination.reAddErased) },
    h('summary', { text: t('configure.advanced') }),
    field({ id: 'tag-prefix', label: t('configure.tagPrefix'), hint: t('configure.tagPrefixHint'), control: prefix }),
    h('p', { class: 'hint' }, example),
    field({ id: 'status-for-new', label: t('configure.statusForNew'), hint: t('configure.statusHint'), control: status }),
    h('div', { class: 'field', id: 're-add-erased-field' },
      h('div', { class: 'check' }, reAdd, h('label', { for: 're-add-erased', text: t('configure.reAddErased') })),
      h('p', { class: 'hint', id: 're-add-erased-hint', text: t('configure.reAddErasedHint') }),
      h('p', { class: 'field-error', id: 're-add-erased-error', hidden: true })));

  // --- the form --------------------------------------------------------------------------------------------------
  const saveButton = h('button', { type: 'submit', class: 'button', id: 'save-config', text: t('configure.save') });
  const exportButton = h('button', { type: 'button', class: 'button button--secondary', id: 'save-and-export', text: t('configure.saveAndExport') });
  const form = h('form', { id: 'configure-form', novalidate: true },
    summary,
    segmentsSet,
    h('fieldset', { class: 'fieldset', id: 'matching' },
      h('legend', { text: t('configure.matchingTitle') }),
      h('p', { class: 'hint', text: t('configure.matchingHint') }),
      emailField, attributes, addAttribute),
    advanced,
    h('div', { class: 'actions' }, saveButton, exportButton,
      h('a', { class: 'button button--quiet', id: 'configure-back', href: `#/destinations/${encodeURIComponent(destination.id)}/connect`, text: t('app.back') })));
  replace(body, ...notes, form);

  // Initial attributes: the saved mapping, else FNAME and LNAME when the audience has them.
  const mapped = destination.mapping ? destination.mapping.mergeFields || {} : null;
  refreshColumns();
  if (mapped) {
    for (const [tag, column] of Object.entries(mapped)) addRow(tag, column, false);
  } else {
    for (const tag of ['FNAME', 'LNAME']) {
      if (mergeFields.some((f) => f.tag === tag)) addRow(tag, guess(GUESSES[tag]), false);
    }
  }
  refreshTotal();
  showExample();

  // --- saving ----------------------------------------------------------------------------------------------------
  function problems() {
    const found = [];
    if (!selected.size) found.push(['segments', t('configure.segmentsRequired')]);
    if (!emailSelect.value) found.push(['map-email', t('configure.emailRequired')]);
    const tags = new Set();
    for (const row of rows) {
      const tag = row.tag.value === NEW ? row.newTag.value.trim().toUpperCase() : row.tag.value;
      if (!row.tag.value) found.push([`attr-${row.n}-tag`, t('configure.fieldRequired')]);
      else if (row.tag.value === NEW && !MERGE_TAG.test(tag)) found.push([`attr-${row.n}-new`, t('configure.tagInvalid')]);
      else if (tags.has(tag)) found.push([row.tag.value === NEW ? `attr-${row.n}-new` : `attr-${row.n}-tag`, t('configure.tagTwice', { tag })]);
      tags.add(tag);
      if (!row.column.value) found.push([`attr-${row.n}-column`, t('configure.columnRequired')]);
    }
    return found;
  }

  function showLocal(found) {
    for (const [id, message] of found) setFieldError(id, message);
    summary.hidden = false;
    replace(summary, h('p', { class: 'problem__title', text: t('form.fix') }),
      h('ul', {}, found.map(([id, message]) => h('li', {}, h('a', { href: `#${id}`, text: message,
        onclick: (event) => { event.preventDefault(); document.getElementById(id).focus(); } })))));
    summary.focus();
  }

  function fieldId(name) {
    if (!name) return null;
    if (name.startsWith('segments')) return 'segments';
    if (name === 'mapping' || name === 'mapping.email') return 'map-email';
    if (name.startsWith('mapping.mergeFields.')) {
      const tag = name.slice('mapping.mergeFields.'.length);
      const row = rows.find((r) => (r.tag.value === NEW ? r.newTag.value.trim().toUpperCase() : r.tag.value) === tag);
      return row ? (row.tag.value === NEW ? `attr-${row.n}-new` : `attr-${row.n}-tag`) : null;
    }
    if (name === 'tagPrefix') return 'tag-prefix';
    if (name === 'statusForNew') return 'status-for-new';
    if (name === 'reAddErased') return 're-add-erased';
    return null;
  }

  async function save() {
    clearFieldErrors(form);
    hideSummary(summary);
    const found = problems();
    if (found.length) {
      showLocal(found);
      return null;
    }
    const mergeFields = {};
    let creating = false;
    for (const row of rows) {
      const tag = row.tag.value === NEW ? row.newTag.value.trim().toUpperCase() : row.tag.value;
      creating = creating || row.tag.value === NEW;
      mergeFields[tag] = row.column.value;
    }
    for (const tag of Object.keys((destination.mapping && destination.mapping.mergeFields) || {})) {
      if (!(tag in mergeFields)) mergeFields[tag] = null; // a merge patch: null takes it out
    }
    const change = {
      segments: [...selected.values()],
      mapping: { email: emailSelect.value, mergeFields },
      tagPrefix: prefix.value,
      statusForNew: status.value || null,
      reAddErased: reAdd.checked,
    };
    if (creating) change.createMissingMergeFields = true;
    try {
      destination = await patch(`/destinations/${encodeURIComponent(destination.id)}`, change);
      announce(t('configure.saved'));
      return destination;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showProblems(error, fieldId, summary);
      return null;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    saveButton.disabled = true;
    const saved = await save().finally(() => { saveButton.disabled = false; });
    if (saved) ctx.navigate(`#/destinations/${encodeURIComponent(saved.id)}`);
  });

  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    try {
      const saved = await save();
      if (!saved) return;
      try {
        const run = await post(`/destinations/${encodeURIComponent(saved.id)}/exports`);
        announce(t('destination.exportStarted'));
        ctx.navigate(`#/destinations/${encodeURIComponent(saved.id)}?run=${encodeURIComponent(run.id)}`);
      } catch (error) {
        summary.hidden = false;
        replace(summary, h('p', { class: 'problem__title', text: t('configure.savedNotExported', { error: error.message }) }));
        summary.focus();
      }
    } finally {
      exportButton.disabled = false;
    }
  });
}
