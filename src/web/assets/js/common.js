// Ferry's web app: one small module on top of server-rendered pages, made
// of the files in this folder in order (common, live, transfers, browse,
// settings), each acting only on the page that has its elements. It calls
// the JSON API with the session cookie; nothing secret is kept in script.

const app = document.getElementById('app');
const projectId = app?.dataset.project;
const me = app?.dataset.user;

/** An API refusal (or no answer at all), already in words. */
class Refusal extends Error {
  constructor(status, code, words) {
    super(words);
    this.status = status;
    this.code = code;
  }
}

/** What each refusal the API can answer means for the person. */
const WORDS = {
  401: 'You are signed out. Sign in again to go on.',
  403: 'Only the project’s owner can do that.',
  404: 'This is no longer there. It may have been removed.',
  413: 'That is too large for Ferry.',
  already_member: 'You are already in this project.',
  cross_site: 'Ferry refused a request that did not come from its own pages. Reload the page and try again.',
  database_unavailable: 'Ferry is unavailable right now. Try again in a moment.',
  email_taken: 'An account with this email already exists. Sign in instead.',
  file_changed: 'The file changed on the owner’s computer since this list was shown. The list now has the new version: choose Download again.',
  file_not_found: 'This file is no longer shared: the owner removed or moved it.',
  invalid_credentials: 'Wrong email or password.',
  invalid_email: 'That does not look like an email address.',
  invalid_password: 'The password must have at least 8 characters.',
  weak_password: 'The password must have at least 8 characters.',
  invalid_display_name: 'That name cannot be used.',
  invite_expired: 'This invite link has expired. Ask the owner for a new one.',
  invite_not_found: 'This invite link is not valid.',
  invite_revoked: 'This invite link was revoked. Ask the owner for a new one.',
  invite_used_up: 'This invite link has been used up. Ask the owner for a new one.',
  no_source_device: 'The owner has no computer sharing this project right now, so nothing can be sent.',
  owner_cannot_be_removed: 'The project’s owner cannot be removed.',
  owner_only: 'Only the project’s owner can do that.',
  retry_limit_reached: 'This download was retried as often as Ferry allows. Choose Download again to start over.',
  transfer_cancelled: 'This download was cancelled.',
  transfer_completed: 'This download is already done.',
  transfer_expired: 'This download expired.',
  transfer_failed: 'This download failed. Choose Retry to ask for it again.',
  transfer_in_progress: 'This download is still going.',
  transfer_pending: 'This download has not started yet.',
  too_many_attempts: 'Too many attempts.',
  busy: 'Ferry is busy right now. Try again in a moment.',
  not_found: 'This is no longer there. It may have been removed.',
};

const UNREACHABLE = 'Ferry could not be reached. Check your connection and try again.';

/** Calls our own API; answers its JSON (null for 204), or throws a Refusal. */
async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new Refusal(0, 'unreachable', UNREACHABLE);
  }
  if (res.ok) return res.status === 204 ? null : res.json();
  let error = {};
  try {
    error = (await res.json()).error ?? {};
  } catch {
    // Not our JSON (a proxy's page, say): the status decides below.
  }
  let words = WORDS[error.code] ?? WORDS[res.status] ?? error.message ?? `Something went wrong (${res.status}).`;
  if (res.status === 429 || res.status === 503) {
    const wait = Number(res.headers.get('Retry-After'));
    words = res.status === 503 && !WORDS[error.code] ? 'Ferry is unavailable right now.' : words;
    words += wait ? ` Try again in ${duration(wait)}.` : ' Try again shortly.';
  }
  throw new Refusal(res.status, error.code, words);
}

/** Runs `action`, saying in `status` what it failed with. */
async function attempt(status, action) {
  try {
    return await action();
  } catch (e) {
    status.textContent = e instanceof Refusal ? e.message : UNREACHABLE;
    return undefined;
  }
}

// Numbers, sizes and times in the reader's own locale.
const numbers = (digits) => new Intl.NumberFormat(undefined, { maximumFractionDigits: digits });
const UNITS = ['byte', 'kilobyte', 'megabyte', 'gigabyte', 'terabyte', 'petabyte'];

/** 1,234,567 bytes → "1.2 MB" (decimal units, as file managers show them). */
function bytes(n) {
  let unit = 0;
  let value = Number(n) || 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  // Intl spells a lone byte out ("12 byte"): B reads the same everywhere.
  if (unit === 0) return `${numbers(0).format(value)} B`;
  const digits = value >= 100 ? 0 : 1;
  return new Intl.NumberFormat(undefined, {
    style: 'unit', unit: UNITS[unit], unitDisplay: 'short', maximumFractionDigits: digits,
  }).format(value);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const when = (time) => (time ? dateTime.format(new Date(time)) : '');

/** 75 → "1 minute", 4000 → "1 hour" (rounded, the way people say it). */
function duration(seconds) {
  const [value, unit] = seconds < 90 ? [Math.max(1, Math.round(seconds)), 'second']
    : seconds < 90 * 60 ? [Math.round(seconds / 60), 'minute']
      : [Math.round(seconds / 3600), 'hour'];
  return new Intl.NumberFormat(undefined, { style: 'unit', unit, unitDisplay: 'long' }).format(value);
}

/** Builds an element: `h('li', {class: 'row'}, 'text', child)`. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

// Signing in or up, on any page that has the form: then the same page
// again, signed in.
const auth = document.getElementById('auth');
if (auth) {
  const status = document.getElementById('auth-status');
  auth.addEventListener('submit', async (event) => {
    event.preventDefault();
    const signup = event.submitter?.value === 'signup';
    const buttons = auth.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    status.textContent = signup ? 'Signing up…' : 'Signing in…';
    const user = await attempt(status, async () => {
      const answer = await api('POST', signup ? '/api/auth/signup' : '/api/auth/login', {
        session: 'cookie',
        email: auth.elements.email.value,
        password: auth.elements.password.value,
      });
      return answer.user;
    });
    if (user) {
      // The session travels in its cookie: nothing from the answer is kept.
      auth.elements.password.value = '';
      status.textContent = `Signed in as ${user.email}.`;
      location.reload();
      return;
    }
    buttons.forEach((b) => { b.disabled = false; });
  });
}

const signOut = document.getElementById('sign-out');
signOut?.addEventListener('click', async () => {
  signOut.disabled = true;
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    // Signed out already, or unreachable: the start page says which.
  }
  location.assign('/');
});

const join = document.getElementById('join');
if (join) {
  const status = document.getElementById('join-status');
  join.addEventListener('click', async () => {
    // The token is only in the address; it is read from there, never kept.
    const token = decodeURIComponent(location.pathname.replace(/^\/join\//, ''));
    join.disabled = true;
    status.textContent = 'Joining…';
    try {
      const joined = await api('POST', '/api/invites/accept', { token });
      status.textContent = 'You joined the project.';
      location.assign(`/p/${encodeURIComponent(joined.project_id)}/`);
    } catch (refusal) {
      if (refusal.code === 'already_member') {
        // Nothing to join: the project is theirs to open already.
        location.assign(`/p/${encodeURIComponent(join.dataset.project)}/`);
        return;
      }
      status.textContent = refusal.status === 401 ? 'Sign in or sign up above first, then choose Join.' : refusal.message;
      join.disabled = false;
    }
  });
}
