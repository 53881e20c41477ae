// Transfers as people follow them: each in words and numbers, moved by
// the project's events (every transfer event carries the transfer's whole
// state), with "Retry" once it failed and "Cancel" while it is open.

const OPEN = ['pending', 'in_progress'];
const TRANSFER_EVENTS = [
  'transfer_requested', 'file_transfer_started', 'file_transfer_progress', 'file_transfer_complete',
  'file_transfer_failed', 'file_transfer_cancelled', 'file_transfer_expired', 'transfer_retried',
];

/** Why a transfer failed, for a person. */
const REASONS = {
  stalled: 'the owner’s computer stopped sending it',
  hash_mismatch: 'the bytes received did not match the file',
  file_changed: 'the file changed on the owner’s computer',
  member_removed: 'its requester is no longer in the project',
  failed_at_source: 'the owner’s computer could not send it',
  failed_at_requester: 'it could not be received',
  source_offline: 'the owner’s computer is offline',
  source_not_sending: 'the owner’s computer did not send it in time',
  relay_chunk_damaged: 'a part of it arrived damaged',
};

const fileName = (path) => path.slice(path.lastIndexOf('/') + 1);
const contentUrl = (id) => `/api/projects/${encodeURIComponent(projectId)}/transfers/${encodeURIComponent(id)}/content`;

/** Hands the file to the browser's own download manager, which saves it
 * (and can resume it by `Range`). */
function save(id) {
  const link = h('a', { href: contentUrl(id), download: '', hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

/** Which way the bytes came, for a finished transfer. */
function via(route) {
  if (!route) return '';
  if (route.bytes_direct > 0 && route.bytes_relay > 0) return ', partly straight from the owner’s computer, the rest through Ferry';
  if (route.bytes_direct > 0) return ', straight from the owner’s computer';
  if (route.bytes_relay > 0) return ', through Ferry';
  return '';
}

/** One transfer's state in words. */
function describe(t) {
  const source = t.source ? `the owner’s computer “${t.source.name}”` : 'the owner’s computer';
  switch (t.status) {
    case 'pending':
      return t.source && !t.source.online
        ? `Waiting for ${source}, which is offline. The download starts when it is back online.`
        : `Waiting for ${source} to start sending.`;
    case 'in_progress': {
      const parts = [`${Math.floor(t.percent)}%`, `${bytes(t.bytes)} of ${bytes(t.total)}`];
      if (t.speed) parts.push(`${bytes(t.speed)}/s`);
      if (t.eta !== null && t.eta !== undefined) parts.push(`about ${duration(t.eta)} left`);
      return `Downloading: ${parts.join(' · ')}`;
    }
    case 'completed':
      return `Done: ${bytes(t.total)}, verified${via(t.route)}.`;
    case 'failed':
      return `Failed: ${REASONS[t.error] ?? t.error ?? 'it did not arrive whole'}. Choose Retry to ask again.`;
    case 'cancelled':
      return 'Cancelled.';
    case 'expired':
      return 'Expired: it was not sent in time. Choose Download again to ask once more.';
    default:
      return t.status;
  }
}

/** The fields a row shows, from a transfer object or an event's state. */
function fromTransfer(t) {
  return {
    id: t.id, path: t.file_path, status: t.status, requester: t.requester_id,
    bytes: t.bytes_transferred, total: t.total_bytes, percent: t.percent_complete,
    speed: t.speed_mbps ? (t.speed_mbps * 1e6) / 8 : null, eta: t.eta_seconds, error: t.error_message,
    source: t.source_device, route: t.route,
  };
}

function fromState(d, known) {
  return {
    ...known, id: d.transfer_id, path: d.file_path, status: d.status, requester: d.requester_id,
    bytes: d.bytes_transferred, total: d.total_bytes, percent: d.percent,
    speed: d.speed_mbps ? (d.speed_mbps * 1e6) / 8 : null, eta: d.eta_seconds, error: d.error_message,
    route: d.route ?? known?.route,
  };
}

class Transfers {
  /** `onlyMine`: the folder page lists the visitor's own downloads; the
   * owner's settings list everyone's, naming who asked (`names`). */
  constructor(list, status, { onlyMine, names, empty }) {
    this.list = list;
    this.status = status;
    this.onlyMine = onlyMine;
    this.names = names ?? new Map();
    this.empty = empty;
    this.rows = new Map();
  }

  async load() {
    const page = await attempt(this.status, () => api('GET', `/api/projects/${projectId}/transfers?limit=50`));
    if (!page) return;
    for (const t of page.transfers.reverse()) {
      if (!this.onlyMine || t.requester_id === me) this.show(fromTransfer(t));
    }
    this.sayIfEmpty();
  }

  sayIfEmpty() {
    this.status.textContent = this.rows.size ? '' : this.empty;
  }

  /** Applies a transfer event; true when it was one. */
  onEvent(event) {
    if (!TRANSFER_EVENTS.includes(event.type)) return false;
    const d = event.data;
    if (this.onlyMine && d.requester_id !== me) return true;
    const row = this.rows.get(d.transfer_id);
    if (row) this.show(fromState(d, row.transfer));
    else this.fetch(d.transfer_id);
    return true;
  }

  /** Reads one transfer whole (its source device too) and shows it. */
  async fetch(id) {
    const t = await attempt(this.status, () => api('GET', `/api/projects/${projectId}/transfers/${id}`));
    if (t) this.show(fromTransfer(t));
  }

  /** The owner's computer came online or went offline: the transfers
   * waiting for it say so. */
  onPresence(presence) {
    for (const { transfer } of this.rows.values()) {
      const source = transfer.source;
      if (source?.id !== presence.device_id || source.online === presence.online) continue;
      this.show({ ...transfer, source: { ...source, online: presence.online } });
    }
  }

  /** Reads the waiting transfers again (after a reconnection: whether the
   * owner's computer is online is not replayed). */
  async refreshWaiting() {
    for (const { transfer } of this.rows.values()) {
      if (transfer.status === 'pending') await this.fetch(transfer.id);
    }
  }

  /** Draws a transfer, new ones first, replacing its old row. */
  show(t) {
    const name = fileName(t.path);
    const nameId = `transfer-${t.id}`;
    const describedBy = { 'aria-describedby': nameId };
    const percent = t.status === 'completed' ? 100 : Math.floor(t.percent ?? 0);
    const row = h('li', { class: `row transfer ${t.status}` },
      h('div', { class: 'what' },
        h('span', { class: 'name', id: nameId }, name),
        this.onlyMine ? null : h('span', { class: 'meta' }, `Asked by ${this.names.get(t.requester) ?? 'a member'}`),
        h('progress', { max: 100, value: percent, 'aria-label': `${name}: ${percent}%` }),
        h('p', { class: 'state' }, describe(t))),
      h('div', { class: 'actions' },
        t.status === 'failed' ? h('button', { type: 'button', ...describedBy, onclick: () => this.retry(t) }, 'Retry') : null,
        OPEN.includes(t.status)
          ? h('button', { type: 'button', class: 'secondary', ...describedBy, onclick: () => this.cancel(t) }, 'Cancel')
          : null));
    const old = this.rows.get(t.id);
    // A button that had focus keeps the keyboard where it was.
    const focused = old?.element.contains(document.activeElement);
    if (old) old.element.replaceWith(row);
    else this.list.prepend(row);
    this.rows.set(t.id, { transfer: t, element: row });
    if (focused) (row.querySelector('button') ?? row).focus?.();
    this.sayIfEmpty();
  }

  async retry(t) {
    const done = await attempt(this.status, () => api('POST', `/api/projects/${projectId}/transfers/${t.id}/retry`));
    if (!done) return;
    this.show(fromTransfer(done));
    // The visitor's own download starts again in the browser.
    if (done.requester_id === me) save(done.id);
  }

  async cancel(t) {
    const done = await attempt(this.status, () => api('POST', `/api/projects/${projectId}/transfers/${t.id}/cancel`));
    if (done) this.show(fromTransfer(done));
  }
}
