// Numbers, times and durations in the page's language.
import { lang, t } from './i18n.js';

export function number(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  return new Intl.NumberFormat(lang()).format(Number(value));
}

export function dateTime(iso) {
  if (!iso) return '–';
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  return new Intl.DateTimeFormat(lang(), { dateStyle: 'medium', timeStyle: 'short' }).format(when);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return '–';
  const total = Math.max(0, Math.round(Number(seconds)));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h) return t('time.hoursMinutes', { h, m });
  if (m) return t('time.minutesSeconds', { m, s });
  return t('time.seconds', { s });
}

export const FINISHED = ['succeeded', 'completed_with_errors', 'failed', 'cancelled', 'previewed'];

// Run statuses (and erasure requests': done, rejected) as the page names them (keys listed so the strings test finds each).
const STATUS_KEYS = {
  queued: 'status.queued',
  running: 'status.running',
  cancelling: 'status.cancelling',
  succeeded: 'status.succeeded',
  completed_with_errors: 'status.completed_with_errors',
  failed: 'status.failed',
  cancelled: 'status.cancelled',
  previewed: 'status.previewed',
  done: 'status.done',
  rejected: 'status.rejected',
};

export function statusLabel(status) {
  return STATUS_KEYS[status] ? t(STATUS_KEYS[status]) : String(status || '');
}

const TRIGGER_KEYS = { http: 'trigger.http', schedule: 'trigger.schedule', storage: 'trigger.storage', retry: 'trigger.retry' };

export function triggerLabel(trigger) {
  return TRIGGER_KEYS[trigger] ? t(TRIGGER_KEYS[trigger]) : String(trigger || '');
}

const METHOD_KEYS = { oauth: 'connection.oauth', api_key: 'connection.apiKey', none: 'connection.none' };

export function connectionLabel(mailchimp) {
  const method = mailchimp && mailchimp.connected ? mailchimp.method : 'none';
  return t(METHOD_KEYS[method] || 'connection.none');
}
