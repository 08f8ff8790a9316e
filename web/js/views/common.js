// Pieces several views share: the setup steps, status badges, loading and error notes, and field errors from the API.
import { h, setFieldError, replace } from '../dom.js';
import { statusLabel } from '../format.js';
import { t } from '../i18n.js';

// The platform's setup flow, with the current step marked for assistive technology.
export function steps(current, id) {
  const items = [
    ['steps.destinations', '#/destinations'],
    ['steps.connect', id ? `#/destinations/${encodeURIComponent(id)}/connect` : '#/destinations/new'],
    ['steps.configure', id ? `#/destinations/${encodeURIComponent(id)}/configure` : null],
    ['steps.export', id ? `#/destinations/${encodeURIComponent(id)}` : null],
  ];
  return h('nav', { class: 'steps', 'aria-label': t('steps.label') },
    h('ol', {}, items.map(([key, href], index) => {
      const number = index + 1;
      const label = `${number}. ${t(key)}`;
      const here = number === current;
      const content = here || !href ? h('span', { text: label }) : h('a', { href, text: label });
      return h('li', { class: here ? 'steps__item steps__item--current' : 'steps__item', 'aria-current': here ? 'step' : null }, content);
    })));
}

export function badge(status) {
  return h('span', { class: `badge badge--${String(status || 'none').replace(/[^a-z_]/g, '')}`, text: statusLabel(status) });
}

export function loading(id) {
  return h('p', { class: 'loading', id, role: 'status', text: t('app.loading') });
}

export function problem(message, id) {
  return h('p', { class: 'problem', role: 'alert', id: id || null, text: message });
}

export function success(message, id) {
  return h('p', { class: 'success', role: 'status', id: id || null, text: message });
}

// The API's `details` ([{field, message}]) shown next to the fields they name (fieldIds maps API field -> control id,
// a function for patterns); what has no field goes to the summary. Returns whether any detail was placed.
export function showProblems(error, fieldIds, summary) {
  const loose = [];
  for (const detail of error.details || []) {
    const id = typeof fieldIds === 'function' ? fieldIds(detail.field) : fieldIds[detail.field];
    if (!(id && setFieldError(id, detail.message))) loose.push(detail.field && detail.field !== '(body)' ? `${detail.field}: ${detail.message}` : detail.message);
  }
  if (summary) {
    replace(summary);
    summary.hidden = false;
    summary.append(h('p', { class: 'problem__title', text: error.message || t('error.generic') }));
    if (loose.length) summary.append(h('ul', {}, loose.map((text) => h('li', { text }))));
    summary.focus();
  }
  return loose.length < (error.details || []).length;
}

export function hideSummary(summary) {
  summary.hidden = true;
  replace(summary);
}

export function errorSummary(id) {
  return h('div', { class: 'problem error-summary', id, role: 'alert', tabindex: '-1', hidden: true });
}
