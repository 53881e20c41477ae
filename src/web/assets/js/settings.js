// The owner's settings: invite links (created, copied, revoked), members
// (removed), devices (online or not) and every transfer, kept live.

class Settings {
  constructor() {
    this.names = new Map();
    this.transfers = new Transfers(document.getElementById('transfers'), document.getElementById('transfers-status'), {
      onlyMine: false,
      names: this.names,
      empty: 'No one has downloaded anything yet.',
    });
    this.invites = document.getElementById('invites');
    this.invitesStatus = document.getElementById('invites-status');
    document.getElementById('create-invite').addEventListener('click', (e) => this.createInvite(e.currentTarget));
    document.getElementById('copy-invite').addEventListener('click', () => this.copyInvite());
  }

  async start() {
    const project = await attempt(this.invitesStatus, () => api('GET', `/api/projects/${projectId}`));
    if (!project) return;
    await Promise.all([this.loadInvites(), this.loadMembers(), this.loadDevices()]);
    await this.transfers.load();
    this.live = new Live(projectId, project.head_seq, (event) => this.onEvent(event), document.getElementById('live'), {
      onPresence: (presence) => {
        this.loadDevices();
        this.transfers.onPresence(presence);
      },
      onResubscribed: () => {
        this.loadDevices();
        this.transfers.refreshWaiting();
      },
    });
  }

  onEvent(event) {
    if (this.transfers.onEvent(event)) return;
    if (event.type.startsWith('invite_')) this.loadInvites();
    else if (event.type.startsWith('member_')) this.loadMembers();
    else if (event.type.startsWith('device_')) this.loadDevices();
  }

  async createInvite(button) {
    button.disabled = true;
    this.invitesStatus.textContent = 'Creating an invite link…';
    const invite = await attempt(this.invitesStatus, () => api('POST', `/api/projects/${projectId}/invites`, {}));
    button.disabled = false;
    if (!invite) return;
    this.invitesStatus.textContent = `Invite link created. It works once, until ${when(invite.expires_at)}.`;
    const field = document.getElementById('invite-url');
    field.value = `${location.origin}/join/${encodeURIComponent(invite.token)}`;
    this.shown = invite.id;
    document.getElementById('new-invite').hidden = false;
    field.focus();
    field.select();
    this.loadInvites();
  }

  async copyInvite() {
    const field = document.getElementById('invite-url');
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      // No clipboard API (a page over plain http on a LAN): the old way.
      field.select();
      if (!document.execCommand('copy')) {
        this.invitesStatus.textContent = 'Copying is not allowed here: select the link and copy it yourself.';
        return;
      }
    }
    this.invitesStatus.textContent = 'Invite link copied.';
  }

  async loadInvites() {
    const answer = await attempt(this.invitesStatus, () => api('GET', `/api/projects/${projectId}/invites`));
    if (!answer) return;
    const now = Date.now();
    const rows = answer.invites.map((invite) => {
      const expires = when(invite.expires_at);
      const state = invite.revoked ? 'Revoked'
        : new Date(invite.expires_at).getTime() <= now ? 'Expired'
          : invite.uses >= invite.max_uses ? 'Used up' : 'Active';
      return h('li', { class: 'row' },
        h('div', { class: 'what' },
          h('span', { class: 'name' }, `Invite link · ${state}`),
          h('span', { class: 'meta' }, `Expires ${expires} · used ${invite.uses} of ${invite.max_uses}`)),
        state === 'Active' ? h('div', { class: 'actions' },
          h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Revoke the invite link that expires ${expires}`,
            onclick: (e) => this.revoke(invite, e.currentTarget),
          }, 'Revoke')) : null);
    });
    this.invites.replaceChildren(...rows);
    // The link shown once no longer works (revoked, used up, expired): it is
    // not left on the page to be copied and sent.
    const shown = answer.invites.find((invite) => invite.id === this.shown);
    if (shown && (shown.revoked || shown.uses >= shown.max_uses || new Date(shown.expires_at).getTime() <= now)) {
      document.getElementById('new-invite').hidden = true;
      document.getElementById('invite-url').value = '';
      this.shown = null;
    }
    if (!rows.length) this.invites.append(h('li', { class: 'row empty' }, 'No invite links yet.'));
  }

  async revoke(invite, button) {
    button.disabled = true;
    const done = await attempt(this.invitesStatus, () => api('DELETE', `/api/projects/${projectId}/invites/${invite.id}`));
    if (done === null) this.invitesStatus.textContent = 'Invite link revoked: no one can join with it any more.';
    this.loadInvites();
  }

  async loadMembers() {
    const status = document.getElementById('members-status');
    const answer = await attempt(status, () => api('GET', `/api/projects/${projectId}/members`));
    if (!answer) return;
    for (const m of answer.members) this.names.set(m.user_id, m.display_name);
    document.getElementById('members').replaceChildren(...answer.members.map((m) => h('li', { class: 'row' },
      h('div', { class: 'what' },
        h('span', { class: 'name' }, m.display_name),
        h('span', { class: 'meta' }, `${m.role === 'owner' ? 'Owner' : 'Member'} · joined ${when(m.joined_at)}`)),
      m.role === 'owner' ? null : h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: (e) => this.removeMember(m, e.currentTarget) },
          `Remove ${m.display_name}`)))));
  }

  async removeMember(member, button) {
    const status = document.getElementById('members-status');
    button.disabled = true;
    const done = await attempt(status, () => api('DELETE', `/api/projects/${projectId}/members/${member.user_id}`));
    if (done === null) status.textContent = `${member.display_name} was removed from the project.`;
    else button.disabled = false;
    this.loadMembers();
  }

  async loadDevices() {
    const status = document.getElementById('devices-status');
    const answer = await attempt(status, () => api('GET', `/api/projects/${projectId}/devices`));
    if (!answer) return;
    document.getElementById('devices').replaceChildren(...answer.devices.map((d) => h('li', { class: 'row' },
      h('span', { class: `dot ${d.online ? 'online' : 'offline'}`, 'aria-hidden': 'true' }),
      h('div', { class: 'what' },
        h('span', { class: 'name' }, d.name),
        h('span', { class: 'meta' }, [
          d.role === 'source' ? 'Shares the files' : `Receives files for ${this.names.get(d.user_id) ?? 'a member'}`,
          d.online ? 'Online' : `Offline${d.last_seen_at ? `, last seen ${when(d.last_seen_at)}` : ''}`,
        ].join(' · '))))));
    status.textContent = answer.devices.length ? ''
      : 'No device shares this project yet: run `ferry share` on the computer that has the files.';
  }
}

if (app?.dataset.page === 'settings') new Settings().start();
