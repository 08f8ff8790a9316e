// The admin page: who is signed in (GET /api/me), then one view per URL hash:
//   #/destinations                    export destinations (step 1)
//   #/destinations/new                connect to Mailchimp, for a new destination (step 2)
//   #/destinations/<id>/connect       connect to Mailchimp, for a saved one (OAuth comes back here)
//   #/destinations/<id>/configure     configure the connector (step 3)
//   #/destinations/<id>               the destination: runs, progress, report, actions (step 4)
//   #/erasures                        erasure requests (admins only; the header's nav links it for them)
import { ApiError, PAGE_BASE, api, sendToSignIn, signOutUrl } from './api.js';
import { announce, clear, focusHeading, h } from './dom.js';
import { initI18n, t } from './i18n.js';
import * as configureView from './views/configure.js';
import * as connectView from './views/connect.js';
import * as destinationView from './views/destination.js';
import * as listView from './views/destinations.js';
import * as erasuresView from './views/erasures.js';
import { noAccess } from './views/noaccess.js';

export const ADMIN = 'Exports.Admin';
export const OPERATOR = 'Exports.Operator';

const state = { me: null, cleanup: null, generation: 0 };

function parseHash() {
  const raw = location.hash.replace(/^#/, '');
  if (raw && !raw.startsWith('/')) return null; // an in-page link (the skip link): not a view
  const [path, query = ''] = raw.split('?');
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['?'];
  }
  return { parts, params: new URLSearchParams(query) };
}

export function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

function roles(me) {
  const held = Array.isArray(me && me.roles) ? me.roles : [];
  return { isAdmin: held.includes(ADMIN), isOperator: held.includes(ADMIN) || held.includes(OPERATOR) };
}

function pick(parts) {
  const [first, id, step, ...rest] = parts;
  if (!first) return { view: listView, redirect: '#/destinations' };
  if (first === 'erasures' && !id) return { view: erasuresView, admin: true };
  if (first !== 'destinations' || rest.length) return null;
  if (!id) return { view: listView };
  if (id === 'new' && !step) return { view: connectView, id: null, admin: true };
  if (!step) return { view: destinationView, id };
  if (step === 'connect') return { view: connectView, id, admin: true };
  if (step === 'configure') return { view: configureView, id, admin: true };
  return null;
}

function notFound(root) {
  root.append(h('h1', { text: t('notFound.title') }),
    h('p', {}, t('notFound.text'), ' ', h('a', { href: '#/destinations', text: t('nav.destinations') })));
}

function adminOnly(root) {
  root.append(h('h1', { text: t('adminOnly.title') }), h('p', { text: t('adminOnly.text') }),
    h('p', {}, h('a', { href: '#/destinations', text: t('nav.destinations') })));
}

async function show() {
  const where = parseHash();
  if (!where) return;
  const main = document.getElementById('main');
  if (state.cleanup) {
    try { state.cleanup(); } catch { /* a view's own tidying up must not stop the next view */ }
    state.cleanup = null;
  }
  state.generation += 1;
  const generation = state.generation;
  clear(main);
  const root = h('div', { class: 'view' });
  main.append(root);
  const { isAdmin, isOperator } = roles(state.me);
  if (!isOperator) {
    noAccess(root, state.me);
    focusHeading(root);
    return;
  }
  const chosen = pick(where.parts);
  if (chosen && chosen.redirect) {
    history.replaceState(null, '', chosen.redirect);
  }
  if (!chosen) {
    notFound(root);
  } else if (chosen.admin && !isAdmin) {
    adminOnly(root);
  } else {
    const context = {
      me: state.me, isAdmin, isOperator, id: chosen.id, params: where.params, navigate,
      current: () => generation === state.generation,
    };
    const cleanup = chosen.view.render(root, context);
    state.cleanup = typeof cleanup === 'function' ? cleanup : null;
  }
  markNav(where.parts[0]);
  focusHeading(root);
}

// The sections an admin moves between (export destinations, erasure requests); an operator has only the first, and
// no nav. aria-current marks the one shown.
function sections(me) {
  if (!roles(me).isAdmin) return;
  const nav = h('nav', { class: 'app-nav', id: 'app-nav', 'aria-label': t('nav.sections') },
    h('a', { href: '#/destinations', id: 'nav-destinations', 'data-section': 'destinations', text: t('nav.destinationsSection') }),
    h('a', { href: '#/erasures', id: 'nav-erasures', 'data-section': 'erasures', text: t('nav.erasures') }));
  document.getElementById('app-user').before(nav);
}

function markNav(section) {
  for (const link of document.querySelectorAll('#app-nav a')) {
    if (link.dataset.section === (section || 'destinations')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function header(me) {
  sections(me);
  const nav = document.getElementById('app-user');
  clear(nav);
  nav.append(h('span', { class: 'app-user__name', id: 'signed-in-as' }, t('app.signedInAs', { name: me.name || me.email || me.id })),
    h('a', { class: 'app-user__signout', id: 'sign-out', href: signOutUrl(), text: t('app.signOut') }));
}

function fatal(message) {
  const main = document.getElementById('main');
  clear(main);
  main.append(h('h1', { text: t('error.title') }), h('p', { class: 'problem', role: 'alert', text: message }),
    h('p', {}, h('a', { href: location.href, text: t('error.reload') })));
}

async function start() {
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    document.getElementById('main').focus();
  });
  try {
    await initI18n(PAGE_BASE);
  } catch (error) {
    fatal(`The page's texts could not be loaded (${error.message}).`);
    return;
  }
  try {
    state.me = (await api('GET', '/me', { quiet401: true })).body;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      sendToSignIn();
      return;
    }
    fatal(t('error.me', { status: error.status || t('error.noAnswer') }));
    return;
  }
  header(state.me);
  window.addEventListener('hashchange', show);
  await show();
  announce(t('app.ready'));
}

start();
