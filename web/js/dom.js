// Building the page with the DOM only (never innerHTML with data): text goes in as text.

// h('tag', {attributes}, ...children): `class`, `text`, on<event> handlers, booleans as present/absent attributes.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'value') el.value = value;
    else if (name === 'checked') el.checked = Boolean(value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// The element's children replaced by these (null, undefined and false left out, unlike replaceChildren).
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// A field: its label, an optional hint, the control, and a place for its error, tied by aria-describedby.
export function field({ id, label, hint, control, required, className }) {
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  control.id = id;
  if (required) control.setAttribute('aria-required', 'true');
  describe(control, hintId);
  return h('div', { class: `field ${className || ''}`.trim(), id: `${id}-field` },
    h('label', { for: id, class: 'field__label' }, label, required ? h('span', { class: 'required', text: ' *', 'aria-hidden': 'true' }) : null),
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    control,
    h('p', { class: 'field-error', id: errorId, hidden: true }));
}

function describe(control, ...ids) {
  const current = (control.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
  const next = [...new Set([...current, ...ids.filter(Boolean)])];
  if (next.length) control.setAttribute('aria-describedby', next.join(' '));
  else control.removeAttribute('aria-describedby');
}

// Say what is wrong next to the control (id) and tie the message to it; null clears it.
export function setFieldError(id, message) {
  const control = document.getElementById(id);
  const error = document.getElementById(`${id}-error`);
  if (!control || !error) return false;
  const errorId = `${id}-error`;
  if (message) {
    error.textContent = message;
    error.hidden = false;
    control.setAttribute('aria-invalid', 'true');
    describe(control, errorId);
  } else {
    error.textContent = '';
    error.hidden = true;
    control.removeAttribute('aria-invalid');
    const rest = (control.getAttribute('aria-describedby') || '').split(/\s+/).filter((x) => x && x !== errorId);
    if (rest.length) control.setAttribute('aria-describedby', rest.join(' '));
    else control.removeAttribute('aria-describedby');
  }
  return true;
}

export function clearFieldErrors(root) {
  for (const error of root.querySelectorAll('.field-error')) {
    const id = error.id.replace(/-error$/, '');
    setFieldError(id, null);
  }
}

// Tell screen readers something happened (the page's one polite live region).
let liveTimer = null;
export function announce(message) {
  const live = document.getElementById('live');
  if (!live) return;
  live.textContent = '';
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => { live.textContent = message; }, 50);
}

// Keyboard focus to the view's heading, so a screen reader starts reading the new view.
export function focusHeading(root) {
  const heading = root.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  }
}

// A table in a region that scrolls sideways on a narrow screen, reachable by keyboard.
export function scrollTable(label, table) {
  return h('div', { class: 'table-scroll', role: 'region', 'aria-label': label, tabindex: '0' }, table);
}
