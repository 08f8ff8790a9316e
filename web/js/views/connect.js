// Step 2, "Connect to Mailchimp": display name, the data privacy and compliance notice ("I agree"), the audience
// ID ("Connect" checks it at once), the Mailchimp credential (OAuth or an API key), export users, "Next".
// A new destination is saved (as a draft) at "Next", or before OAuth, which needs its id to come back to.
import { ApiError, get, patch, post, request } from '../api.js';
import { announce, clearFieldErrors, field, h, setFieldError, replace } from '../dom.js';
import { dateTime, number } from '../format.js';
import { t } from '../i18n.js';
import { errorSummary, hideSummary, loading, problem, showProblems, steps, success } from './common.js';

const AUDIENCE_ID = /^[0-9a-zA-Z]{1,32}$/;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s.]+$/;

// API field -> control id, for the problems a save answers with.
function fieldId(name) {
  if (!name) return null;
  if (name === 'displayName') return 'display-name';
  if (name.startsWith('consent')) return 'consent-agree';
  if (name === 'audienceId') return 'audience-id';
  if (name === 'mailchimp.apiKey' || name === 'apiKey') return 'api-key';
  if (name === 'mailchimp' || name === 'destinationId') return 'authenticate-mailchimp';
  if (name.startsWith('exportUsers')) return 'export-user-email';
  return null;
}

function sameUser(a, b) {
  return Boolean((a.id && b.id && a.id.toLowerCase() === b.id.toLowerCase())
    || (a.email && b.email && a.email.toLowerCase() === b.email.toLowerCase()));
}

export function render(root, ctx) {
  const title = ctx.id ? t('connect.titleExisting') : t('connect.title');
  const body = h('div', { id: 'connect-body' }, ctx.id ? loading('connect-loading') : null);
  root.append(steps(2, ctx.id), h('h1', { id: 'connect-title', text: title }), body);
  if (!ctx.id) {
    build(body, ctx, null);
    return;
  }
  get(`/destinations/${encodeURIComponent(ctx.id)}`).then((destination) => {
    if (ctx.current()) build(body, ctx, destination);
  }, (error) => {
    if (!ctx.current()) return;
    replace(body, problem(error.status === 404 ? t('destination.notFound') : error.message),
      h('p', {}, h('a', { href: '#/destinations', text: t('nav.destinations') })));
  });
}

function build(body, ctx, destination) {
  const state = {
    destination,
    exportUsers: destination ? [...(destination.exportUsers || [])] : [],
    audience: null,
  };
  const connected = () => Boolean(state.destination && state.destination.mailchimp && state.destination.mailchimp.connected);
  const summary = errorSummary('connect-errors');

  // --- display name and the notice --------------------------------------------------------------------------
  const name = h('input', { type: 'text', maxlength: '200', autocomplete: 'off', value: destination ? destination.displayName : '' });
  const agree = h('input', { type: 'checkbox', id: 'consent-agree', checked: destination ? destination.consent.accepted : false });
  agree.setAttribute('aria-required', 'true');
  agree.setAttribute('aria-describedby', 'consent-notice');
  const consent = destination && destination.consent;
  const consentNote = consent && consent.accepted && consent.acceptedBy
    ? h('p', { class: 'hint', id: 'consent-record', text: t('connect.consentRecord', { who: consent.acceptedBy, when: dateTime(consent.acceptedAt) }) })
    : consent && !consent.accepted && consent.withdrawnBy
      ? h('p', { class: 'hint', id: 'consent-record', text: t('connect.consentWithdrawn', { who: consent.withdrawnBy, when: dateTime(consent.withdrawnAt) }) })
      : null;
  const consentSet = h('fieldset', { class: 'fieldset notice', id: 'consent-fieldset' },
    h('legend', { text: t('connect.consentTitle') }),
    h('p', { id: 'consent-notice', text: t('connect.consentNotice') }),
    h('div', { class: 'check' }, agree, h('label', { for: 'consent-agree', text: t('connect.agree') })),
    consentNote,
    h('p', { class: 'field-error', id: 'consent-agree-error', hidden: true }));

  // --- the audience --------------------------------------------------------------------------------------------
  const audienceInput = h('input', { type: 'text', maxlength: '32', autocomplete: 'off', spellcheck: 'false', value: destination ? destination.audienceId : '' });
  const audienceResult = h('div', { id: 'audience-result', role: 'status', class: 'result' });
  const connectButton = h('button', { type: 'button', class: 'button button--secondary', id: 'connect-audience', text: t('connect.connect') });
  const audienceField = field({ id: 'audience-id', label: t('connect.audienceId'), hint: t('connect.audienceHint'), control: audienceInput, required: true });
  audienceField.append(h('div', { class: 'inline-actions' }, connectButton), audienceResult);

  // --- the credential ------------------------------------------------------------------------------------------
  const method = destination && destination.mailchimp && destination.mailchimp.method === 'api_key' ? 'apiKey' : 'oauth';
  const oauthRadio = h('input', { type: 'radio', name: 'connect-method', id: 'method-oauth', value: 'oauth', checked: method === 'oauth' });
  const keyRadio = h('input', { type: 'radio', name: 'connect-method', id: 'method-api-key', value: 'apiKey', checked: method === 'apiKey' });
  const authButton = h('button', { type: 'button', class: 'button button--secondary', id: 'authenticate-mailchimp', text: t('connect.authenticate') });
  authButton.setAttribute('aria-describedby', 'authenticate-hint');
  const connectionState = h('p', { id: 'connection-state', class: 'hint' });
  const showConnection = () => {
    const mc = state.destination && state.destination.mailchimp;
    connectionState.textContent = mc && mc.connected
      ? (mc.method === 'oauth' ? t('connect.connectedOauth') : t('connect.connectedKey'))
      : t('connect.notConnected');
  };
  showConnection();
  const oauthPanel = h('div', { class: 'panel', id: 'oauth-panel' },
    h('p', { class: 'hint', id: 'authenticate-hint', text: t('connect.authenticateHint') }),
    authButton,
    h('p', { class: 'field-error', id: 'authenticate-mailchimp-error', hidden: true }));
  const keyInput = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false' });
  const keyPanel = h('div', { class: 'panel', id: 'api-key-panel' },
    field({ id: 'api-key', label: t('connect.apiKey'), hint: connected() && method === 'apiKey' ? t('connect.apiKeyKeep') : t('connect.apiKeyHint'), control: keyInput }));
  const showPanels = () => {
    oauthPanel.hidden = !oauthRadio.checked;
    keyPanel.hidden = !keyRadio.checked;
  };
  oauthRadio.addEventListener('change', showPanels);
  keyRadio.addEventListener('change', showPanels);
  showPanels();
  const credentialSet = h('fieldset', { class: 'fieldset', id: 'credential-fieldset' },
    h('legend', { text: t('connect.credentialTitle') }),
    connectionState,
    h('div', { class: 'radios' },
      h('div', { class: 'check' }, oauthRadio, h('label', { for: 'method-oauth', text: t('connect.methodOauth') })),
      h('div', { class: 'check' }, keyRadio, h('label', { for: 'method-api-key', text: t('connect.methodKey') }))),
    oauthPanel, keyPanel);

  // --- export users --------------------------------------------------------------------------------------------
  const usersList = h('ul', { class: 'users', id: 'export-users-list' });
  const addSelf = h('button', { type: 'button', class: 'button button--secondary', id: 'add-self', text: t('connect.addSelf') });
  const userEmail = h('input', { type: 'email', autocomplete: 'off', spellcheck: 'false' });
  const addUser = h('button', { type: 'button', class: 'button button--secondary', id: 'add-export-user', text: t('connect.addUser') });
  const me = ctx.me || {};
  const drawUsers = () => {
    replace(usersList, ...(state.exportUsers.length ? state.exportUsers.map((user, index) => {
      const label = user.name && user.email ? `${user.name} (${user.email})` : user.email || user.name || user.id;
      return h('li', {}, h('span', { text: label }), ' ',
        h('button', { type: 'button', class: 'link-button', id: `remove-export-user-${index}`, 'aria-label': t('connect.removeUser', { who: label }), text: t('connect.remove'),
          onclick: () => { state.exportUsers.splice(index, 1); drawUsers(); announce(t('connect.userRemoved', { who: label })); (addSelf.disabled ? userEmail : addSelf).focus(); } }));
    }) : [h('li', { class: 'muted', text: t('connect.noUsers') })]));
    addSelf.disabled = state.exportUsers.some((user) => sameUser(user, me));
  };
  addSelf.addEventListener('click', () => {
    const self = { id: me.id, email: me.email || undefined, name: me.name || undefined };
    if (!state.exportUsers.some((user) => sameUser(user, self))) state.exportUsers.push(self);
    drawUsers();
    // this button is disabled now, which would drop the keyboard focus to the page's start: keep it beside the user
    const added = document.getElementById(`remove-export-user-${state.exportUsers.findIndex((user) => sameUser(user, self))}`);
    if (added) added.focus();
    announce(t('connect.userAdded', { who: me.email || me.name || me.id }));
  });
  addUser.addEventListener('click', () => {
    const email = userEmail.value.trim().toLowerCase();
    if (!EMAIL.test(email)) {
      setFieldError('export-user-email', t('connect.userEmailInvalid'));
      userEmail.focus();
      return;
    }
    setFieldError('export-user-email', null);
    if (!state.exportUsers.some((user) => sameUser(user, { email }))) state.exportUsers.push({ email });
    userEmail.value = '';
    drawUsers();
    announce(t('connect.userAdded', { who: email }));
  });
  // Enter here adds the user, as the button beside it does; the form's own Enter (Next) would save and leave the step
  // with the typed address dropped.
  userEmail.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.isComposing) {
      event.preventDefault();
      addUser.click();
    }
  });
  drawUsers();
  const usersSet = h('fieldset', { class: 'fieldset', id: 'export-users-fieldset' },
    h('legend', { text: t('connect.usersTitle') }),
    h('p', { class: 'hint', id: 'export-users-hint', text: t('connect.usersHint') }),
    usersList, addSelf,
    field({ id: 'export-user-email', label: t('connect.userEmail'), control: userEmail }),
    addUser);

  // --- the form ------------------------------------------------------------------------------------------------
  const nextButton = h('button', { type: 'submit', class: 'button', id: 'next-step', text: t('connect.next') });
  const form = h('form', { id: 'connect-form', novalidate: true },
    summary,
    field({ id: 'display-name', label: t('connect.displayName'), hint: t('connect.displayNameHint'), control: name, required: true }),
    consentSet,
    audienceField,
    credentialSet,
    usersSet,
    h('div', { class: 'actions' }, nextButton,
      h('a', { class: 'button button--quiet', id: 'connect-cancel', href: destination ? `#/destinations/${encodeURIComponent(destination.id)}` : '#/destinations', text: t('app.cancel') })));
  const notes = [];
  if (ctx.params.get('connected') === '1' && connected()) notes.push(success(t('connect.oauthDone'), 'oauth-connected'));
  if (destination && destination.draft) notes.push(h('p', { class: 'hint', text: t('connect.draftNote') }));
  replace(body, ...notes, form);

  // --- behaviour -----------------------------------------------------------------------------------------------
  const check = (needKey) => {
    clearFieldErrors(form);
    hideSummary(summary);
    const problems = [];
    if (!name.value.trim()) problems.push(['display-name', t('connect.nameRequired')]);
    if (!agree.checked) problems.push(['consent-agree', t('connect.consentRequired')]);
    const audience = audienceInput.value.trim();
    if (!audience) problems.push(['audience-id', t('connect.audienceRequired')]);
    else if (!AUDIENCE_ID.test(audience)) problems.push(['audience-id', t('connect.audienceInvalid')]);
    if (needKey && keyRadio.checked && !keyInput.value.trim() && !(connected() && state.destination.mailchimp.method === 'api_key')) {
      problems.push(['api-key', t('connect.keyRequired')]);
    }
    for (const [id, message] of problems) setFieldError(id, message);
    if (problems.length) {
      summary.hidden = false;
      replace(summary, h('p', { class: 'problem__title', text: t('form.fix') }),
        h('ul', {}, problems.map(([id, message]) => h('li', {}, h('a', { href: `#${id}`, onclick: (event) => { event.preventDefault(); document.getElementById(id).focus(); }, text: message })))));
      summary.focus();
      return false;
    }
    return true;
  };

  const changes = (withKey) => {
    const wanted = {
      displayName: name.value.trim(),
      audienceId: audienceInput.value.trim(),
      consent: { accepted: agree.checked },
      exportUsers: state.exportUsers.map((user) => Object.fromEntries(Object.entries(user).filter(([, v]) => v))),
    };
    if (withKey && keyRadio.checked && keyInput.value.trim()) wanted.mailchimp = { apiKey: keyInput.value.trim() };
    if (!state.destination) {
      if (!wanted.exportUsers.length) delete wanted.exportUsers;
      return wanted;
    }
    const d = state.destination;
    const change = {};
    if (wanted.displayName !== d.displayName) change.displayName = wanted.displayName;
    if (wanted.audienceId !== d.audienceId) change.audienceId = wanted.audienceId;
    if (wanted.consent.accepted !== d.consent.accepted) change.consent = wanted.consent;
    if (JSON.stringify(wanted.exportUsers) !== JSON.stringify((d.exportUsers || []).map((user) => Object.fromEntries(Object.entries(user).filter(([, v]) => v))))) {
      change.exportUsers = wanted.exportUsers;
    }
    if (wanted.mailchimp) change.mailchimp = wanted.mailchimp;
    return change;
  };

  // Saved: created (POST) or changed (PATCH); the destination as stored, or null when the answer was a problem.
  const save = async (withKey) => {
    const body = changes(withKey);
    try {
      if (!state.destination) {
        state.destination = await post('/destinations', body);
        history.replaceState(null, '', `#/destinations/${encodeURIComponent(state.destination.id)}/connect`);
      } else if (Object.keys(body).length) {
        state.destination = await patch(`/destinations/${encodeURIComponent(state.destination.id)}`, body);
      }
      keyInput.value = '';
      showConnection();
      return state.destination;
    } catch (error) {
      if (error instanceof ApiError) showProblems(error, fieldId, summary);
      else throw error;
      return null;
    }
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!check(true)) return;
    nextButton.disabled = true;
    const saved = await save(true);
    nextButton.disabled = false;
    if (!saved) return;
    announce(t('connect.saved'));
    ctx.navigate(`#/destinations/${encodeURIComponent(saved.id)}/configure`);
  });

  connectButton.addEventListener('click', async () => {
    setFieldError('audience-id', null);
    setFieldError('api-key', null);
    setFieldError('authenticate-mailchimp', null);
    replace(audienceResult);
    const audienceId = audienceInput.value.trim();
    if (!AUDIENCE_ID.test(audienceId)) {
      setFieldError('audience-id', audienceId ? t('connect.audienceInvalid') : t('connect.audienceRequired'));
      audienceInput.focus();
      return;
    }
    let lookup;
    if (keyRadio.checked && keyInput.value.trim()) lookup = { audienceId, apiKey: keyInput.value.trim() };
    else if (connected()) lookup = { audienceId, destinationId: state.destination.id };
    else {
      setFieldError('audience-id', keyRadio.checked ? t('connect.needKeyFirst') : t('connect.needOauthFirst'));
      audienceInput.focus();
      return;
    }
    connectButton.disabled = true;
    audienceResult.textContent = t('connect.checking');
    try {
      const found = await post('/mailchimp/audience', lookup);
      state.audience = found;
      const a = found.audience;
      replace(audienceResult, success(t('connect.audienceFound', {
        name: a.name, members: number(a.memberCount), fields: number(found.mergeFields.length),
        optin: a.doubleOptIn ? t('connect.doubleOptInOn') : t('connect.doubleOptInOff'),
      }), 'audience-found'));
      announce(t('connect.audienceFoundShort', { name: a.name }));
    } catch (error) {
      replace(audienceResult);
      if (!(error instanceof ApiError)) throw error;
      const placed = showProblems(error, fieldId, null);
      if (!placed) setFieldError('audience-id', error.message);
      const first = (error.details[0] && document.getElementById(fieldId(error.details[0].field))) || audienceInput;
      first.focus();
    } finally {
      connectButton.disabled = false;
    }
  });

  authButton.addEventListener('click', async () => {
    setFieldError('authenticate-mailchimp', null);
    if (!check(false)) return;
    authButton.disabled = true;
    try {
      const saved = await save(false);
      if (!saved) return;
      const path = `/destinations/${encodeURIComponent(saved.id)}/mailchimp/connect`;
      const res = await request('POST', path, { body: {} });
      let answer = null;
      try { answer = await res.json(); } catch { /* not JSON */ }
      if (res.ok && answer && answer.authorizeUrl) {
        announce(t('connect.leaving'));
        location.assign(answer.authorizeUrl);
        return;
      }
      const message = (answer && answer.error) || t('connect.oauthFailed', { status: res.status });
      setFieldError('authenticate-mailchimp', res.status === 501 ? t('connect.oauthNotSetUp') : message);
      if (res.status === 501) { keyRadio.checked = true; showPanels(); }
      authButton.focus();
    } catch (error) {
      setFieldError('authenticate-mailchimp', error.message);
    } finally {
      authButton.disabled = false;
    }
  });

  // Back from Mailchimp's OAuth: check the audience with the credential just stored.
  if (ctx.params.get('connected') === '1' && connected() && audienceInput.value.trim()) connectButton.click();
}
