// Strings of the page in English and French (web/i18n/*.json, the same keys in both), chosen by the browser's
// languages (navigator.languages): the first of them that is French or English, else English.

export const LANGUAGES = ['en', 'fr'];
let strings = {};
let fallback = {};
let language = 'en';

export function pickLanguage(preferred) {
  for (const tag of preferred || []) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

async function load(base, lang) {
  const res = await fetch(new URL(`i18n/${lang}.json`, base), { credentials: 'same-origin' });
  if (!res.ok) throw new Error(`i18n/${lang}.json: ${res.status}`);
  return res.json();
}

export async function initI18n(base) {
  language = pickLanguage(navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language]);
  fallback = await load(base, 'en');
  strings = language === 'en' ? fallback : await load(base, language).catch(() => fallback);
  document.documentElement.lang = language;
  translateStatic(document);
  return language;
}

export function lang() {
  return language;
}

// t(key, params): the string for key, each {name} in it replaced by params[name].
export function t(key, params) {
  let text = strings[key] ?? fallback[key] ?? key;
  if (params) {
    text = text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }
  return text;
}

// Elements of index.html carry data-i18n (their text) and data-i18n-aria-label (their label).
export function translateStatic(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.getAttribute('data-i18n'));
  for (const el of root.querySelectorAll('[data-i18n-aria-label]')) {
    el.setAttribute('aria-label', t(el.getAttribute('data-i18n-aria-label')));
  }
  document.title = t('app.title');
}
