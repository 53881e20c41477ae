// Ferry's web app: a small module on top of server-rendered pages. It
// sends the sign-in form and the Join button as JSON calls to the API.

/** POSTs JSON to our own API; the session cookie goes along. */
function post(path, body) {
  return fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  });
}

/** A refusal in words a person can act on. */
async function explain(res, messages) {
  let error = {};
  try {
    error = (await res.json()).error ?? {};
  } catch {
    // Not our JSON (a proxy's page, say): the status decides below.
  }
  if (res.status === 429) {
    const wait = res.headers.get('Retry-After');
    return wait ? `Too many attempts. Try again in ${wait} seconds.` : 'Too many attempts. Try again shortly.';
  }
  if (res.status === 503) return 'Ferry is unavailable right now. Try again in a moment.';
  return messages[error.code] ?? messages[res.status] ?? error.message ?? `Something went wrong (${res.status}).`;
}

const unreachable = 'Ferry could not be reached. Check your connection and try again.';

const auth = document.getElementById('auth');
if (auth) {
  const status = document.getElementById('auth-status');
  auth.addEventListener('submit', async (event) => {
    event.preventDefault();
    const signup = event.submitter?.value === 'signup';
    const buttons = auth.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    status.textContent = signup ? 'Signing up…' : 'Signing in…';
    try {
      const res = await post(signup ? '/api/auth/signup' : '/api/auth/login', {
        session: 'cookie',
        email: auth.elements.email.value,
        password: auth.elements.password.value,
      });
      if (res.ok) {
        // The session travels in its cookie: the token in the answer is not kept.
        const { user } = await res.json();
        auth.elements.password.value = '';
        status.textContent = `Signed in as ${user.email}.`;
      } else {
        status.textContent = await explain(res, {
          401: 'Wrong email or password.',
          409: 'An account with this email already exists. Sign in instead.',
        });
      }
    } catch {
      status.textContent = unreachable;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

const join = document.getElementById('join');
if (join) {
  const status = document.getElementById('join-status');
  join.addEventListener('click', async () => {
    // The token is only in the address; it is read from there, never kept.
    const token = decodeURIComponent(location.pathname.replace(/^\/join\//, ''));
    join.disabled = true;
    status.textContent = 'Joining…';
    try {
      const res = await post('/api/invites/accept', { token });
      if (res.ok) {
        const { project_id: project } = await res.json();
        status.textContent = 'You joined the project.';
        location.assign(`/p/${encodeURIComponent(project)}/`);
        return;
      }
      status.textContent = await explain(res, {
        401: 'Sign in or sign up above first, then choose Join.',
        already_member: 'You are already in this project.',
        invite_not_found: 'This invite link is not valid.',
        invite_used_up: 'This invite link has been used up.',
        invite_revoked: 'This invite link was revoked.',
        invite_expired: 'This invite link has expired.',
      });
    } catch {
      status.textContent = unreachable;
    }
    join.disabled = false;
  });
}
