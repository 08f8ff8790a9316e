// The app's API, from the page: same origin, the session cookie App Service Authentication set, and the header
// that tells the API a state-changing request comes from this page (X-Requested-With), on every request.

export const PAGE_BASE = new URL('../', import.meta.url); // /api/console/
export const API_BASE = new URL('../../', import.meta.url).pathname.replace(/\/$/, ''); // /api
export const SIGN_IN = '/.auth/login/aad';
export const SIGN_OUT = '/.auth/logout';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.details = Array.isArray(this.body.details) ? this.body.details : [];
  }
}

export function signInUrl() {
  const back = PAGE_BASE.pathname + (location.hash || '');
  return `${SIGN_IN}?post_login_redirect_uri=${encodeURIComponent(back)}`;
}

export function signOutUrl() {
  return `${SIGN_OUT}?post_logout_redirect_uri=${encodeURIComponent(PAGE_BASE.pathname)}`;
}

export function sendToSignIn() {
  location.assign(signInUrl());
}

function url(path, query) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return `${API_BASE}${path}${text ? `?${text}` : ''}`;
}

// fetch with the page's rules; the raw Response (for headers and other types than JSON).
export async function request(method, path, { body, query, accept, redirect } = {}) {
  const headers = { 'X-Requested-With': 'XMLHttpRequest', Accept: accept || 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
    redirect: redirect || 'follow',
  });
}

async function parsed(res) {
  const type = res.headers.get('Content-Type') || '';
  if (res.status === 204 || !type.includes('json')) return null;
  try {
    return await res.json();
  } catch {
    return null;
  }
}

// A JSON call: the parsed answer, or ApiError (401 also sends the browser to sign in, unless quiet401).
export async function api(method, path, options = {}) {
  let res;
  try {
    res = await request(method, path, options);
  } catch (error) {
    throw new ApiError(0, { error: String(error && error.message ? error.message : error) });
  }
  const body = await parsed(res);
  if (res.status === 401 && !options.quiet401) sendToSignIn();
  if (!res.ok) throw new ApiError(res.status, body);
  return { body, headers: res.headers, status: res.status };
}

export const get = (path, options) => api('GET', path, options).then((r) => r.body);
export const post = (path, body, options) => api('POST', path, { ...options, body }).then((r) => r.body);
export const patch = (path, body, options) => api('PATCH', path, { ...options, body }).then((r) => r.body);
export const del = (path, options) => api('DELETE', path, options).then((r) => r.body);
