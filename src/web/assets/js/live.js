// Following a project live: the same replay-by-seq the CLI uses. The page
// reads a snapshot with the head it is consistent with, then subscribes
// after that head; every event after it arrives once, in seq order. A
// dropped connection (a server restart, the network) reconnects by itself
// and resumes after the last seq seen: no reload, nothing missed.

/** How long a silent connection is trusted: pings go every 20 s. */
const PING_EVERY = 20_000;
const SILENCE_LIMIT = 50_000;

class Live {
  /** `onEvent(event)` gets each event; `status` says when the page is not
   * live. A device coming online or going offline is not an event (not in
   * the log, not replayed): `onPresence(presence)` gets each change, and
   * `onResubscribed()` is called after a reconnection, to read again what
   * may have changed meanwhile. */
  constructor(project, afterSeq, onEvent, status, { onPresence, onResubscribed } = {}) {
    this.project = project;
    this.seq = afterSeq;
    this.onEvent = onEvent;
    this.onPresence = onPresence;
    this.onResubscribed = onResubscribed;
    this.subscriptions = 0;
    this.status = status;
    this.backoff = 1000;
    this.stopped = false;
    this.connect();
    // Back on the network: try at once rather than at the next backoff.
    window.addEventListener('online', () => this.retryNow());
  }

  connect() {
    clearTimeout(this.retry);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/ws`);
    this.socket = socket;
    let heard = Date.now();
    const pinger = setInterval(() => {
      if (Date.now() - heard > SILENCE_LIMIT) socket.close();
      else if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'ping' }));
    }, PING_EVERY);
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({ type: 'subscribe', project_id: this.project, after_seq: this.seq }));
    });
    socket.addEventListener('message', (message) => {
      heard = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.receive(frame);
    });
    socket.addEventListener('close', () => {
      clearInterval(pinger);
      if (this.stopped || this.socket !== socket) return;
      this.say(`Connection to Ferry lost. Reconnecting in ${duration(this.backoff / 1000)}…`);
      this.retry = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 30_000);
    });
  }

  receive(frame) {
    switch (frame.type) {
      case 'subscribed':
        this.subscriptions += 1;
        if (this.subscriptions > 1) this.onResubscribed?.();
        return;
      case 'presence':
        this.onPresence?.(frame);
        return;
      case 'pong':
        return;
      case 'caught_up':
        this.backoff = 1000;
        this.say('');
        return;
      case 'error':
        if (frame.code === 'not_found' || frame.code === 'access_revoked') {
          this.stop('You are no longer in this project, or it was archived. Reload the page to see where you are.');
        } else {
          // Not subscribed (the server could not read the log, say): start
          // again, after the backoff.
          this.socket.close();
        }
        return;
      default:
        // An event: each seq once, in order, whatever the reconnects.
        if (typeof frame.seq !== 'number' || frame.seq <= this.seq) return;
        this.seq = frame.seq;
        this.onEvent(frame);
    }
  }

  retryNow() {
    if (!this.stopped && this.socket?.readyState === WebSocket.CLOSED) {
      this.backoff = 1000;
      this.connect();
    }
  }

  say(words) {
    if (this.status.textContent !== words) this.status.textContent = words;
  }

  /** Stops following, saying why. */
  stop(words) {
    this.stopped = true;
    clearTimeout(this.retry);
    this.socket?.close();
    this.say(words);
  }
}
