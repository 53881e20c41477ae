// The file browser: one folder of a project, paged by keyset ("Show more
// files"), kept live by the project's events, each file with its
// "Download <name>" button; the visitor's downloads beside it.

const utf8 = new TextEncoder();

/** Byte order of UTF-8, the order the server pages paths in. */
function byteOrder(a, b) {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** An entry's place in the folder: a subfolder sorts as `name/`, as its paths do. */
const sortKey = (entry) => (entry.kind === 'folder' ? `${entry.name}/` : entry.name);

function folderUrl(path) {
  const segments = path.split('/').filter(Boolean).map(encodeURIComponent);
  return `/p/${encodeURIComponent(projectId)}/${segments.map((s) => `${s}/`).join('')}`;
}

class Browser {
  constructor(folder) {
    this.folder = folder;
    this.list = document.getElementById('entries');
    this.status = document.getElementById('files-status');
    this.more = document.getElementById('more');
    this.entries = new Map();
    this.cursor = null;
    // Folders whose emptiness is being checked, and the seq each was last added at.
    this.touched = new Map();
    this.transfers = new Transfers(document.getElementById('transfers'), document.getElementById('transfers-status'), {
      onlyMine: true,
      empty: 'Nothing downloaded yet. Choose Download beside a file to get it.',
    });
    this.more.addEventListener('click', () => this.page());
  }

  async start() {
    const head = await this.page();
    if (head === undefined) return;
    await this.transfers.load();
    this.live = new Live(projectId, head, (event) => this.onEvent(event), document.getElementById('live'), {
      onPresence: (presence) => this.transfers.onPresence(presence),
      onResubscribed: () => this.transfers.refreshWaiting(),
    });
  }

  /** The next page of entries; answers the head it was read at. */
  async page() {
    this.more.disabled = true;
    const query = new URLSearchParams({ path: this.folder, limit: '100' });
    if (this.cursor) query.set('cursor', this.cursor);
    const page = await attempt(this.status, () => api('GET', `/api/projects/${projectId}/folder?${query}`));
    this.more.disabled = false;
    if (!page) return undefined;
    const focusNext = this.entries.size > 0;
    const before = this.list.lastElementChild;
    for (const entry of page.entries) this.put(entry);
    this.cursor = page.next_cursor;
    this.more.hidden = !this.cursor;
    this.sayIfEmpty();
    // Keyboard users land on the first new entry, not back at the top.
    if (focusNext) (before?.nextElementSibling?.querySelector('a, button'))?.focus();
    return page.head_seq;
  }

  sayIfEmpty() {
    const top = this.folder === '/';
    this.status.textContent = this.entries.size ? ''
      : top ? 'No files yet — the owner’s device has not shared anything.'
        : 'This folder is empty: the owner has no files in it any more.';
  }

  /** Whether a key lies inside what was loaded: past the last page read,
   * the next page brings it. */
  loaded(key) {
    if (!this.cursor) return true;
    const last = this.list.lastElementChild?.dataset.key;
    return last !== undefined && byteOrder(key, last) <= 0;
  }

  /** Adds or replaces an entry, in order. */
  put(entry) {
    const key = sortKey(entry);
    const element = entry.kind === 'folder' ? this.folderRow(entry) : this.fileRow(entry);
    element.dataset.key = key;
    const old = this.entries.get(key);
    if (old) {
      const focused = old.contains(document.activeElement);
      old.replaceWith(element);
      if (focused) element.querySelector('a, button')?.focus();
    } else {
      const after = [...this.list.children].find((row) => byteOrder(row.dataset.key, key) > 0);
      this.list.insertBefore(element, after ?? null);
    }
    this.entries.set(key, element);
  }

  remove(key) {
    const element = this.entries.get(key);
    if (!element) return;
    const focused = element.contains(document.activeElement);
    const next = element.nextElementSibling ?? element.previousElementSibling;
    element.remove();
    this.entries.delete(key);
    if (focused) (next?.querySelector('a, button') ?? this.list).focus?.();
    this.sayIfEmpty();
  }

  folderRow(entry) {
    return h('li', { class: 'row folder' },
      h('span', { class: 'icon', 'aria-hidden': 'true' }),
      h('div', { class: 'what' },
        h('a', { class: 'name', href: folderUrl(entry.path) }, entry.name),
        h('span', { class: 'meta' }, 'Folder')));
  }

  fileRow(entry) {
    const meta = [bytes(entry.size)];
    if (entry.modified_at) meta.push(`changed ${when(entry.modified_at)}`);
    return h('li', { class: 'row file' },
      h('span', { class: 'icon', 'aria-hidden': 'true' }),
      h('div', { class: 'what' },
        h('span', { class: 'name' }, entry.name),
        h('span', { class: 'meta' }, meta.join(' · '))),
      h('div', { class: 'actions' },
        h('button', { type: 'button', 'aria-label': `Download ${entry.name}`, onclick: (e) => this.download(entry, e.currentTarget) },
          'Download')));
  }

  /** Asks for the transfer, shows it, and hands its stream to the browser. */
  async download(entry, button) {
    button.disabled = true;
    const status = this.transfers.status;
    const asked = await attempt(status, () => api('POST', `/api/projects/${projectId}/files/download`, {
      file_path: entry.path, file_hash: entry.hash, request_mode: 'full',
    }));
    button.disabled = false;
    if (!asked) return;
    await this.transfers.fetch(asked.download_id);
    save(asked.download_id);
  }

  onEvent(event) {
    if (this.transfers.onEvent(event)) return;
    const d = event.data;
    switch (event.type) {
      case 'file_added':
      case 'file_updated':
        this.fileIs(d.path, d, event.seq);
        break;
      case 'file_deleted':
        this.fileIs(d.path, null, event.seq);
        break;
      case 'file_moved':
        this.fileIs(d.from, null, event.seq);
        this.fileIs(d.to, { ...d, path: d.to }, event.seq);
        break;
      case 'member_removed':
        if (d.user_id === me) this.live.stop('You are no longer in this project.');
        break;
      case 'project_archived':
        this.live.stop('The owner archived this project: its files are no longer shared.');
        break;
      default:
    }
  }

  /** A path now holds `state` (or nothing): the entry it shows as here. */
  fileIs(path, state, seq) {
    if (!path.startsWith(this.folder)) return;
    const rest = path.slice(this.folder.length);
    const slash = rest.indexOf('/');
    if (slash < 0) {
      if (!state) return this.remove(rest);
      const entry = { kind: 'file', name: rest, ...state, path };
      if (this.entries.has(rest) || this.loaded(rest)) this.put(entry);
      return this.sayIfEmpty();
    }
    const name = rest.slice(0, slash);
    const folder = { kind: 'folder', name, path: `${this.folder}${name}/` };
    if (state) {
      this.touched.set(name, seq);
      if (!this.entries.has(`${name}/`) && this.loaded(`${name}/`)) this.put(folder);
      return this.sayIfEmpty();
    }
    if (this.entries.has(`${name}/`)) this.recheck(folder, seq);
    return undefined;
  }

  /** A file left a subfolder: the folder stays only while it holds one. */
  async recheck(folder, seq) {
    const query = new URLSearchParams({ path: folder.path, limit: '1' });
    const page = await attempt(this.status, () => api('GET', `/api/projects/${projectId}/folder?${query}`));
    // A file added to it since the check began keeps it, whatever the check saw.
    if (page && page.entries.length === 0 && (this.touched.get(folder.name) ?? 0) <= seq) {
      this.remove(`${folder.name}/`);
    }
  }
}

if (app?.dataset.page === 'folder') new Browser(app.dataset.folder).start();
