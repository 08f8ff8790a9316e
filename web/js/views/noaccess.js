// Signed in, but without an app role: say which roles exist and whom to ask.
import { signOutUrl } from '../api.js';
import { h } from '../dom.js';
import { t } from '../i18n.js';

export function noAccess(root, me) {
  const who = (me && (me.email || me.name || me.id)) || '';
  root.append(
    h('h1', { id: 'no-access-title', text: t('noAccess.title') }),
    h('p', { id: 'no-access-text', text: t('noAccess.signedInAs', { who }) }),
    h('h2', { text: t('noAccess.rolesTitle') }),
    h('dl', { class: 'roles', id: 'roles-list' },
      h('dt', {}, h('code', { text: 'Exports.Admin' })), h('dd', { text: t('noAccess.admin') }),
      h('dt', {}, h('code', { text: 'Exports.Operator' })), h('dd', { text: t('noAccess.operator') })),
    h('h2', { text: t('noAccess.askTitle') }),
    h('p', { id: 'no-access-ask', text: t('noAccess.ask') }),
    h('p', {}, h('a', { class: 'button button--secondary', id: 'no-access-sign-out', href: signOutUrl(), text: t('app.signOut') })));
}
