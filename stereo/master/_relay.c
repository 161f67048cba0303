/*
 * stereo.master._relay: the hub's data plane in C (optional; stereo/master/hub.py is the reference
 * and the fallback, stereo/master/cplane.py drives this one).
 *
 * A Relay owns an epoll loop on its own pthread, which never touches a Python object and never
 * takes the GIL. After the Python handshake the hub hands it each peer's socket (add(), which
 * dup()s the fd). The thread reads the peers, splits frames exactly as
 * stereo.wire.protocol.HubIngress does (same bounds, same order of checks), stamps seq and sender
 * into BROADCAST frames and the sender's address into DIRECT frames in place, writes each run of
 * broadcasts to every member (directly when its queue is empty, else queued: one refcounted
 * buffer per run, shared by the queues) and routes DIRECT frames by address, bouncing those for
 * an address that is gone or not accepting.
 *
 * Everything else goes to Python as an event through a queue and an eventfd: a control frame
 * (the peer's intake pauses until Python answers with resume() or cut_off(), so what follows a
 * control frame is handled exactly as the Python hub handles it), a protocol error (the peer
 * stops being read; Python words the reason and cuts it off), the end of a connection, and a
 * slow consumer the relay cut off. Python-facing methods take the mutex with the GIL released
 * (the thread may hold the mutex, and never waits for the GIL, so no deadlock).
 *
 * Frame layout (docs/protocol.md): u32 length (of what follows), u8 kind, body; a BROADCAST body
 * is u64 seq, u32 sender, payload; a DIRECT body is u32 address, payload. All big-endian.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define LENGTH_SIZE 4
#define PREFIX_SIZE 5
#define BROADCAST_MIN_LENGTH 13 /* kind byte, u64 seq, u32 sender */
#define DIRECT_MIN_LENGTH 5     /* kind byte, u32 address */
#define KIND_BROADCAST 0x05
#define KIND_DIRECT 0x0B
#define KIND_BOUNCED 0x0F
#define RECEIVE_SIZE (256 * 1024)
#define MAX_IOV 1024
#define MAX_BUCKETS 64

/* Event types handed to Python (cplane.py names them). */
enum { EV_CONTROL = 1, EV_ERROR = 2, EV_ENDED = 3, EV_SLOW = 4 };
/* Why a slow consumer was cut off: which write overflowed its queue. */
enum { SLOW_FAN_OUT = 0, SLOW_DIRECT = 1, SLOW_BOUNCE = 2 };

typedef struct Buf {
    size_t refs;
    size_t len;
    unsigned char data[];
} Buf;

typedef struct Chunk {
    Buf *buf;
    size_t off, len;
    struct Chunk *next;
} Chunk;

/* The bytes being relayed, and the refcounted copy queues share (made on first need). */
typedef struct {
    const unsigned char *data;
    size_t len;
    Buf *buf;
} Source;

typedef struct Peer {
    long long id;
    int fd; /* our dup; -1 once closed */
    uint32_t sender, address;
    int member, accepting, parked, registered;
    uint32_t mask; /* the epoll interest registered */
    size_t limit;
    unsigned char *in;
    size_t in_len, in_cap;
    Chunk *head, *tail;
    size_t queued, peak;
    unsigned long long messages_in, messages_out, bytes_in, bytes_out;
    struct Peer *next;
} Peer;

typedef struct Event {
    int type;
    long long id, a, b, c;
    unsigned char *body;
    size_t body_len;
    struct Event *next;
} Event;

/* A DIRECT frame of the current read, relayed at the next control frame or the read's end. */
typedef struct {
    size_t off, len;
    uint32_t target;
    size_t group; /* order of its target's first appearance in the read */
} Pending;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_t thread;
    int started, stopping, closed;
    int epfd, wakefd, eventfd;
    size_t max_length;
    Peer *peers;
    Event *ev_head, *ev_tail;
    unsigned long long next_seq, broadcasts, deliveries, bytes_in, bytes_out, relayed_bytes;
    size_t bucket_bounds[MAX_BUCKETS];
    int nbuckets;
    unsigned long long size_counts[MAX_BUCKETS + 1];
    Pending *pending, *sorted;
    size_t npending, cap_pending;
    size_t *slots, *counts; /* a hash of targets, and per group counts, for relay_pending */
    size_t cap_slots;
} Relay;

static inline uint32_t
get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static inline void
put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

/* The kinds a worker may send besides BROADCAST and DIRECT (protocol.WORKER_TO_MASTER). */
static inline int
to_master(int kind)
{
    return kind == 0x01 || kind == 0x03 || kind == 0x04 || kind == 0x06 || kind == 0x0D;
}

static Buf *
buf_new(const unsigned char *data, size_t len)
{
    Buf *buf = malloc(sizeof(Buf) + len);
    if (buf == NULL)
        return NULL;
    buf->refs = 0;
    buf->len = len;
    memcpy(buf->data, data, len);
    return buf;
}

static void
buf_release(Buf *buf)
{
    if (--buf->refs == 0)
        free(buf);
}

/* -- events (to Python) -------------------------------------------------------------------- */

static void
push_event(Relay *self, int type, long long id, long long a, long long b, long long c,
           const unsigned char *body, size_t body_len)
{
    Event *ev = calloc(1, sizeof(Event));
    if (ev == NULL)
        abort(); /* out of memory in the relay thread: nothing sane is left to do */
    ev->type = type;
    ev->id = id;
    ev->a = a;
    ev->b = b;
    ev->c = c;
    if (body_len) {
        ev->body = malloc(body_len);
        if (ev->body == NULL)
            abort();
        memcpy(ev->body, body, body_len);
        ev->body_len = body_len;
    }
    int was_empty = self->ev_head == NULL;
    if (self->ev_tail)
        self->ev_tail->next = ev;
    else
        self->ev_head = ev;
    self->ev_tail = ev;
    if (was_empty) {
        uint64_t one = 1;
        (void)!write(self->eventfd, &one, sizeof one);
    }
}

/* -- peers ----------------------------------------------------------------------------------- */

static void
set_interest(Relay *self, Peer *p)
{
    if (p->fd < 0)
        return;
    /* A parked peer's queue waits too: if Python cuts it off, what was queued when it parked
     * (a bounce, say) is dropped, as the Python hub drops its outbox then. */
    uint32_t mask = p->parked ? 0 : (EPOLLIN | (p->head ? EPOLLOUT : 0));
    if (mask == p->mask && (mask != 0) == p->registered)
        return;
    struct epoll_event ev = {.events = mask, .data.u64 = (uint64_t)p->id};
    if (mask == 0) {
        /* Parked and idle: out of the loop entirely, or a hang-up would be reported forever. */
        if (p->registered)
            epoll_ctl(self->epfd, EPOLL_CTL_DEL, p->fd, NULL);
        p->registered = 0;
    }
    else if (p->registered) {
        epoll_ctl(self->epfd, EPOLL_CTL_MOD, p->fd, &ev);
    }
    else {
        epoll_ctl(self->epfd, EPOLL_CTL_ADD, p->fd, &ev);
        p->registered = 1;
    }
    p->mask = mask;
}

static void
drop_queue(Peer *p)
{
    Chunk *c = p->head;
    while (c) {
        Chunk *next = c->next;
        buf_release(c->buf);
        free(c);
        c = next;
    }
    p->head = p->tail = NULL;
    p->queued = 0;
}

/* Close the connection (the record stays, with its counters, until remove()). */
static void
close_peer(Relay *self, Peer *p)
{
    if (p->fd < 0)
        return;
    if (p->registered)
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, p->fd, NULL);
    p->registered = 0;
    close(p->fd);
    p->fd = -1;
    p->member = 0;
    drop_queue(p);
    /* The input buffer stays until remove(): the loop may be walking it (a sender cut off
     * during its own fan-out still has the rest of its read relayed, as in the Python hub). */
}

static Peer *
find_peer(Relay *self, long long id)
{
    for (Peer *p = self->peers; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* Queue [off, off+len) of the source for one peer. */
static int
enqueue(Peer *p, Source *src, size_t off, size_t len)
{
    if (src->buf == NULL) {
        src->buf = buf_new(src->data, src->len);
        if (src->buf == NULL)
            return -1;
        src->buf->refs = 1; /* the source's own, until source_done(): a queue may be dropped */
    }
    Chunk *c = malloc(sizeof(Chunk));
    if (c == NULL)
        return -1;
    c->buf = src->buf;
    src->buf->refs++;
    c->off = off;
    c->len = len;
    c->next = NULL;
    if (p->tail)
        p->tail->next = c;
    else
        p->head = c;
    p->tail = c;
    p->queued += len;
    if (p->queued > p->peak)
        p->peak = p->queued;
    return 0;
}

static void
source_done(Source *src)
{
    if (src->buf)
        buf_release(src->buf);
}

/* Write what the socket takes now; -1: the connection is broken. */
static ssize_t
send_some(Peer *p, const unsigned char *data, size_t len)
{
    ssize_t sent = send(p->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    p->bytes_out += (size_t)sent;
    return sent;
}

/*
 * Hand [off, off+len) of base to one peer, as Outbox does: written at once when its queue is
 * empty (what the socket does not take is queued, unchecked), else queued and checked against
 * the limit. Returns 0, 1 (over the limit: the caller cuts it off) or -1 (broken).
 */
static int
deliver(Relay *self, Peer *p, Source *src)
{
    if (p->head == NULL) {
        ssize_t sent = send_some(p, src->data, src->len);
        if (sent < 0)
            return -1;
        if ((size_t)sent < src->len) {
            if (enqueue(p, src, (size_t)sent, src->len - (size_t)sent) < 0)
                abort();
            set_interest(self, p);
        }
        return 0;
    }
    if (enqueue(p, src, 0, src->len) < 0)
        abort();
    return p->queued > p->limit;
}

static void
cut_slow(Relay *self, Peer *p, int how)
{
    size_t pending = p->queued;
    close_peer(self, p);
    push_event(self, EV_SLOW, p->id, (long long)pending, (long long)p->limit, how, NULL, 0);
}

static void
cut_broken(Relay *self, Peer *p)
{
    close_peer(self, p);
    push_event(self, EV_ENDED, p->id, 0, 0, 0, NULL, 0);
}

/* Flush a peer's queue with as few writev calls as the kernel allows. */
static void
flush(Relay *self, Peer *p)
{
    struct iovec iov[MAX_IOV];
    while (p->head && !p->parked) {
        int n = 0;
        for (Chunk *c = p->head; c && n < MAX_IOV; c = c->next, n++) {
            iov[n].iov_base = c->buf->data + c->off;
            iov[n].iov_len = c->len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t sent = sendmsg(p->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            cut_broken(self, p);
            return;
        }
        p->bytes_out += (size_t)sent;
        p->queued -= (size_t)sent;
        size_t left = (size_t)sent;
        while (p->head && left >= p->head->len) {
            Chunk *c = p->head;
            left -= c->len;
            p->head = c->next;
            buf_release(c->buf);
            free(c);
        }
        if (p->head == NULL) {
            p->tail = NULL;
            break;
        }
        if (left) {
            p->head->off += left;
            p->head->len -= left;
            break; /* the socket is full */
        }
    }
    set_interest(self, p);
}

/* -- relaying ------------------------------------------------------------------------------- */

static size_t
bucket_of(Relay *self, size_t size)
{
    size_t lo = 0, hi = (size_t)self->nbuckets; /* bisect_left */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (self->bucket_bounds[mid] < size)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Every member gets the run; mirrors Hub._fan_out, counters included. */
static void
fan_out(Relay *self, const unsigned char *data, size_t len, size_t count)
{
    Source src = {data, len, NULL};
    size_t members = 0;
    self->broadcasts += count;
    self->relayed_bytes += len;
    self->size_counts[bucket_of(self, (len + count - 1) / count)] += count;
    for (Peer *p = self->peers; p; p = p->next) {
        if (!p->member)
            continue;
        p->messages_out += count;
        int r = deliver(self, p, &src);
        if (r < 0)
            cut_broken(self, p);
        else if (r > 0)
            cut_slow(self, p, SLOW_FAN_OUT);
        else
            members++;
    }
    self->deliveries += count * members;
    self->bytes_out += len * members;
    source_done(&src);
}

static Peer *
route(Relay *self, uint32_t address)
{
    for (Peer *p = self->peers; p; p = p->next)
        if (p->address == address && p->fd >= 0 && p->accepting)
            return p;
    return NULL;
}

static void
bounce(Relay *self, Peer *sender, const unsigned char *frame, size_t len, uint32_t target)
{
    if (sender->fd < 0)
        return; /* cut off meanwhile: nothing more reaches it */
    Source src = {frame, len, buf_new(frame, len)};
    if (src.buf == NULL)
        abort();
    src.buf->refs = 1;
    /* Given back as it came, but for the kind, and the address that was not reachable. */
    src.buf->data[PREFIX_SIZE - 1] = KIND_BOUNCED;
    put_u32(src.buf->data + PREFIX_SIZE, target);
    if (enqueue(sender, &src, 0, len) < 0)
        abort();
    if (sender->queued > sender->limit)
        cut_slow(self, sender, SLOW_BOUNCE);
    else
        set_interest(self, sender); /* written by the loop, as the Python hub's writer does */
    source_done(&src);
}

/* Group the read's DIRECT frames by target, in order of first appearance (counting sort). */
static void
group_pending(Relay *self, size_t n)
{
    size_t cap = 16, groups = 0;
    while (cap < 2 * n)
        cap *= 2;
    if (cap > self->cap_slots) {
        free(self->slots);
        free(self->counts);
        self->slots = malloc(cap * sizeof(size_t));
        self->counts = malloc(cap * sizeof(size_t));
        if (self->slots == NULL || self->counts == NULL)
            abort();
        self->cap_slots = cap;
    }
    for (size_t i = 0; i < cap; i++)
        self->slots[i] = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        Pending *d = &self->pending[i];
        size_t h = (d->target * 2654435761u) & (cap - 1);
        while (self->slots[h] != SIZE_MAX && self->pending[self->slots[h]].target != d->target)
            h = (h + 1) & (cap - 1);
        if (self->slots[h] == SIZE_MAX) {
            self->slots[h] = i;
            self->counts[groups] = 0;
            d->group = groups++;
        }
        else
            d->group = self->pending[self->slots[h]].group;
        self->counts[d->group]++;
    }
    size_t at = 0;
    for (size_t g = 0; g < groups; g++) {
        size_t c = self->counts[g];
        self->counts[g] = at;
        at += c;
    }
    for (size_t i = 0; i < n; i++)
        self->sorted[self->counts[self->pending[i].group]++] = self->pending[i];
}

/*
 * The DIRECT frames of one read, as PoolRoutes.relay_all does: each target's frames in order,
 * targets in order of first appearance; a frame for an address that is gone or not accepting
 * goes back to its sender as BOUNCED.
 */
static void
relay_pending(Relay *self, Peer *sender, const unsigned char *base)
{
    size_t n = self->npending;
    self->npending = 0;
    if (n == 0)
        return;
    group_pending(self, n);
    size_t i = 0;
    while (i < n) {
        Pending *d = &self->sorted[i];
        Peer *target = route(self, d->target);
        if (target == NULL) {
            bounce(self, sender, base + d->off, d->len, d->target);
            i++;
            continue;
        }
        /* Consecutive frames for one address leave in one piece. */
        size_t stop = d->off + d->len, j = i + 1;
        while (j < n && self->sorted[j].target == d->target && self->sorted[j].off == stop) {
            stop += self->sorted[j].len;
            j++;
        }
        Source src = {base + d->off, stop - d->off, NULL};
        int r = deliver(self, target, &src);
        if (r < 0)
            cut_broken(self, target);
        else if (r > 0)
            cut_slow(self, target, SLOW_DIRECT);
        source_done(&src);
        i = j;
    }
}

static int
add_pending(Relay *self, size_t off, size_t len, uint32_t target)
{
    if (self->npending == self->cap_pending) {
        size_t cap = self->cap_pending ? 2 * self->cap_pending : 64;
        Pending *more = realloc(self->pending, cap * sizeof(Pending));
        if (more == NULL)
            return -1;
        self->pending = more;
        more = realloc(self->sorted, cap * sizeof(Pending));
        if (more == NULL)
            return -1;
        self->sorted = more;
        self->cap_pending = cap;
    }
    self->pending[self->npending++] = (Pending){off, len, target, 0};
    return 0;
}

/*
 * Walk the complete frames buffered for one peer: HubIngress.events and Hub._read_loop in one.
 * Stops after a control frame (the peer parks until Python answers) or at a protocol error. A
 * sender cut off meanwhile (a slow reader of its own broadcasts) still has this read's
 * broadcasts and DIRECT frames relayed, but no control frame handled, as in the Python hub.
 */
static void
process(Relay *self, Peer *p)
{
    unsigned char *buf = p->in;
    size_t end = p->in_len, offset = 0, run_start = 0, run_count = 0;
    size_t max_length = self->max_length;
    int error = 0, direct_short = 0, kind = 0;
    size_t length = 0;
    while (end - offset >= PREFIX_SIZE) {
        length = get_u32(buf + offset);
        kind = buf[offset + LENGTH_SIZE];
        if (length > max_length) {
            error = 1;
            break;
        }
        size_t stop = offset + LENGTH_SIZE + length;
        if (stop > end)
            break;
        if (kind == KIND_BROADCAST) {
            if (length < BROADCAST_MIN_LENGTH) {
                error = 1;
                break;
            }
            if (run_count == 0)
                run_start = offset;
            put_u64(buf + offset + PREFIX_SIZE, self->next_seq++);
            put_u32(buf + offset + PREFIX_SIZE + 8, p->sender);
            run_count++;
            p->messages_in++;
            offset = stop;
            continue;
        }
        if (run_count) { /* a run is one slice of the buffer: it ends here */
            fan_out(self, buf + run_start, offset - run_start, run_count);
            run_count = 0;
        }
        if (kind == KIND_DIRECT) {
            if (length < DIRECT_MIN_LENGTH) {
                error = direct_short = 1;
                break;
            }
            uint32_t target = get_u32(buf + offset + PREFIX_SIZE);
            put_u32(buf + offset + PREFIX_SIZE, p->address);
            if (add_pending(self, offset, stop - offset, target) < 0)
                abort();
            offset = stop;
            continue;
        }
        if (length == 0 || !to_master(kind)) { /* length 0: the kind byte is not even there */
            error = 1;
            break;
        }
        relay_pending(self, p, buf);
        if (p->fd >= 0) {
            p->parked = 1;
            push_event(self, EV_CONTROL, p->id, kind, 0, 0, buf + offset + PREFIX_SIZE,
                       length - 1);
        }
        offset = stop;
        break;
    }
    if (!error && !p->parked && end - offset < PREFIX_SIZE && end - offset >= LENGTH_SIZE) {
        /* A bad length prefix is an error as soon as its four bytes are in. */
        length = get_u32(buf + offset);
        kind = 0;
        error = length == 0 || length > max_length;
    }
    if (run_count)
        fan_out(self, buf + run_start, offset - run_start, run_count);
    relay_pending(self, p, buf);
    if (error) {
        /* Python words the reason (with HubIngress's own functions) and cuts it off. */
        if (p->fd >= 0) {
            p->parked = 1;
            push_event(self, EV_ERROR, p->id, kind, (long long)length, direct_short, NULL, 0);
        }
        offset = end;
    }
    if (p->fd < 0) {
        p->in_len = 0;
        return;
    }
    if (offset) {
        memmove(buf, buf + offset, end - offset);
        p->in_len = end - offset;
    }
    set_interest(self, p);
}

static int
reserve(Peer *p, size_t more)
{
    if (p->in_cap - p->in_len >= more)
        return 0;
    size_t cap = p->in_len + more;
    unsigned char *in = realloc(p->in, cap);
    if (in == NULL)
        return -1;
    p->in = in;
    p->in_cap = cap;
    return 0;
}

static void
read_peer(Relay *self, Peer *p)
{
    size_t want = RECEIVE_SIZE;
    if (p->in_len >= LENGTH_SIZE) { /* a big frame under way: read the rest at once */
        size_t length = get_u32(p->in);
        if (length <= self->max_length && LENGTH_SIZE + length > p->in_len &&
            LENGTH_SIZE + length - p->in_len > want)
            want = LENGTH_SIZE + length - p->in_len;
    }
    if (reserve(p, want) < 0)
        abort();
    ssize_t got = recv(p->fd, p->in + p->in_len, want, MSG_DONTWAIT);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        cut_broken(self, p); /* e.g. ECONNRESET: gone, as the Python hub sees an OSError */
        return;
    }
    if (got == 0) { /* not a cut-off: a worker killed inside a write ends the same way */
        size_t truncated = p->in_len;
        close_peer(self, p);
        push_event(self, EV_ENDED, p->id, (long long)truncated, 0, 0, NULL, 0);
        return;
    }
    p->bytes_in += (size_t)got;
    self->bytes_in += (size_t)got;
    p->in_len += (size_t)got;
    process(self, p);
}

static void *
loop(void *arg)
{
    Relay *self = arg;
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(self->epfd, events, 64, -1);
        if (n < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&self->lock);
        if (self->stopping) {
            pthread_mutex_unlock(&self->lock);
            break;
        }
        for (int i = 0; i < n; i++) {
            /* By id, not pointer: Python may have removed the peer since epoll_wait returned. */
            Peer *p = find_peer(self, (long long)events[i].data.u64);
            if (p == NULL)
                continue; /* gone, or the wake-up fd (which only says "look at stopping") */
            uint32_t got = events[i].events;
            /* The peer may have been closed by an earlier event of this same batch. */
            if (p->fd >= 0 && (got & (EPOLLOUT | EPOLLERR)) && p->head)
                flush(self, p);
            if (p->fd >= 0 && !p->parked && (got & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                read_peer(self, p);
        }
        pthread_mutex_unlock(&self->lock);
    }
    return NULL;
}

/* -- the Python object ---------------------------------------------------------------------- */

static void
lock_released(Relay *self)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    Py_END_ALLOW_THREADS
}

/* A peer id argument; -1 with an exception set if it is not an int. */
static int
id_of(PyObject *arg, long long *id)
{
    *id = PyLong_AsLongLong(arg);
    return (*id == -1 && PyErr_Occurred()) ? -1 : 0;
}

#define LOCK_OPEN(self, fail)                                                  \
    do {                                                                       \
        lock_released(self);                                                   \
        if ((self)->closed) {                                                  \
            pthread_mutex_unlock(&(self)->lock);                               \
            PyErr_SetString(PyExc_ValueError, "the relay is closed");          \
            return fail;                                                       \
        }                                                                      \
    } while (0)

static void
free_all(Relay *self)
{
    Peer *p = self->peers;
    while (p) {
        Peer *next = p->next;
        close_peer(self, p);
        free(p->in);
        free(p);
        p = next;
    }
    self->peers = NULL;
    Event *ev = self->ev_head;
    while (ev) {
        Event *next = ev->next;
        free(ev->body);
        free(ev);
        ev = next;
    }
    self->ev_head = self->ev_tail = NULL;
    free(self->pending);
    free(self->sorted);
    free(self->slots);
    free(self->counts);
    self->pending = self->sorted = NULL;
    self->slots = self->counts = NULL;
    self->cap_pending = self->npending = self->cap_slots = 0;
}

static void
shut(Relay *self)
{
    if (self->closed)
        return;
    if (self->started) {
        pthread_mutex_lock(&self->lock);
        self->stopping = 1;
        pthread_mutex_unlock(&self->lock);
        uint64_t one = 1;
        (void)!write(self->wakefd, &one, sizeof one);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->started = 0;
    }
    free_all(self);
    if (self->epfd >= 0)
        close(self->epfd);
    if (self->wakefd >= 0)
        close(self->wakefd);
    if (self->eventfd >= 0)
        close(self->eventfd);
    self->epfd = self->wakefd = self->eventfd = -1;
    self->closed = 1;
}

static int
Relay_init(Relay *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_length", "buckets", NULL};
    Py_ssize_t max_length;
    PyObject *buckets;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nO", kwlist, &max_length, &buckets))
        return -1;
    if (self->started || self->epfd > 0) {
        PyErr_SetString(PyExc_RuntimeError, "Relay.__init__ called twice");
        return -1;
    }
    PyObject *seq = PySequence_Fast(buckets, "buckets must be a sequence of ints");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_BUCKETS || max_length < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many buckets, or max_length < 1");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t bound = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
        if (bound < 0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        self->bucket_bounds[i] = (size_t)bound;
    }
    Py_DECREF(seq);
    self->nbuckets = (int)n;
    self->max_length = (size_t)max_length;
    self->next_seq = 1;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    self->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->epfd < 0 || self->wakefd < 0 || self->eventfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->wakefd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (pthread_mutex_init(&self->lock, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_mutex_init failed");
        return -1;
    }
    /* The thread blocks every signal: they go to Python's thread, and its syscalls see no EINTR. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&self->thread, NULL, loop, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->started = 1;
    return 0;
}

static PyObject *
Relay_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Relay *self = (Relay *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = self->wakefd = self->eventfd = -1;
    return (PyObject *)self;
}

static void
Relay_dealloc(Relay *self)
{
    if (self->epfd >= 0 || self->started)
        shut(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Relay_fileno(Relay *self, PyObject *unused)
{
    return PyLong_FromLong(self->eventfd);
}

static PyObject *
Relay_add(Relay *self, PyObject *args)
{
    long long id;
    int fd, member;
    unsigned long sender, address;
    Py_ssize_t limit;
    Py_buffer initial;
    if (!PyArg_ParseTuple(args, "Liklpny*", &id, &fd, &sender, &address, &member, &limit,
                          &initial))
        return NULL;
    Peer *p = calloc(1, sizeof(Peer));
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (p == NULL || dup_fd < 0 || reserve(p, (size_t)initial.len + 1) < 0) {
        free(p ? p->in : NULL);
        free(p);
        if (dup_fd >= 0)
            close(dup_fd);
        PyBuffer_Release(&initial);
        return dup_fd < 0 ? PyErr_SetFromErrno(PyExc_OSError) : PyErr_NoMemory();
    }
    fcntl(dup_fd, F_SETFL, fcntl(dup_fd, F_GETFL) | O_NONBLOCK);
    p->id = id;
    p->fd = dup_fd;
    p->sender = (uint32_t)sender;
    p->address = (uint32_t)address;
    p->member = member;
    p->accepting = 1;
    p->limit = (size_t)limit;
    memcpy(p->in, initial.buf, (size_t)initial.len);
    p->in_len = (size_t)initial.len;
    PyBuffer_Release(&initial);
    LOCK_OPEN(self, (close(dup_fd), free(p->in), free(p), NULL));
    /* Appended: fan-out order is join order, as the Python hub's peers dict keeps it. */
    Peer **tail = &self->peers;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    process(self, p);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
Relay_accepting(Relay *self, PyObject *args)
{
    long long id;
    int flag;
    if (!PyArg_ParseTuple(args, "Lp", &id, &flag))
        return NULL;
    LOCK_OPEN(self, NULL);
    Peer *p = find_peer(self, id);
    if (p)
        p->accepting = flag;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
Relay_send(Relay *self, PyObject *args)
{
    long long id;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "Ly*", &id, &frame))
        return NULL;
    lock_released(self);
    int over = 0;
    Peer *p = self->closed ? NULL : find_peer(self, id);
    if (p && p->fd >= 0) {
        Source src = {frame.buf, (size_t)frame.len, NULL};
        if (enqueue(p, &src, 0, src.len) < 0)
            abort();
        over = p->queued > p->limit;
        flush(self, p);
        source_done(&src);
    }
    pthread_mutex_unlock(&self->lock);
    PyBuffer_Release(&frame);
    return PyBool_FromLong(over);
}

static PyObject *
Relay_broadcast(Relay *self, PyObject *arg)
{
    Py_buffer frame;
    if (PyObject_GetBuffer(arg, &frame, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)frame.len < LENGTH_SIZE + BROADCAST_MIN_LENGTH) {
        PyBuffer_Release(&frame);
        PyErr_SetString(PyExc_ValueError, "not a BROADCAST frame");
        return NULL;
    }
    unsigned char *copy = malloc((size_t)frame.len);
    if (copy == NULL) {
        PyBuffer_Release(&frame);
        return PyErr_NoMemory();
    }
    memcpy(copy, frame.buf, (size_t)frame.len);
    size_t len = (size_t)frame.len;
    PyBuffer_Release(&frame);
    LOCK_OPEN(self, (free(copy), NULL));
    unsigned long long seq = self->next_seq++;
    put_u64(copy + PREFIX_SIZE, seq);
    put_u32(copy + PREFIX_SIZE + 8, 0);
    fan_out(self, copy, len, 1);
    pthread_mutex_unlock(&self->lock);
    free(copy);
    return PyLong_FromUnsignedLongLong(seq);
}

static PyObject *
Relay_resume(Relay *self, PyObject *arg)
{
    long long id;
    if (id_of(arg, &id) < 0)
        return NULL;
    LOCK_OPEN(self, NULL);
    Peer *p = find_peer(self, id);
    if (p && p->fd >= 0 && p->parked) {
        p->parked = 0;
        process(self, p); /* what was read after the control frame */
    }
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
Relay_parked(Relay *self, PyObject *arg)
{
    long long id;
    if (id_of(arg, &id) < 0)
        return NULL;
    LOCK_OPEN(self, NULL);
    Peer *p = find_peer(self, id);
    int parked = p && p->fd >= 0 && p->parked;
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(parked);
}

static PyObject *
Relay_cut_off(Relay *self, PyObject *arg)
{
    long long id;
    if (id_of(arg, &id) < 0)
        return NULL;
    lock_released(self);
    Peer *p = self->closed ? NULL : find_peer(self, id);
    if (p)
        close_peer(self, p);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
peer_tuple(Peer *p)
{
    return Py_BuildValue("(KKKKnn)", p->messages_in, p->messages_out, p->bytes_in, p->bytes_out,
                         (Py_ssize_t)p->queued, (Py_ssize_t)p->peak);
}

static PyObject *
Relay_peer_statistics(Relay *self, PyObject *arg)
{
    long long id;
    if (id_of(arg, &id) < 0)
        return NULL;
    lock_released(self);
    Peer *p = self->closed ? NULL : find_peer(self, id);
    PyObject *out = p ? peer_tuple(p) : Py_NewRef(Py_None);
    pthread_mutex_unlock(&self->lock);
    return out;
}

static PyObject *
Relay_remove(Relay *self, PyObject *arg)
{
    long long id;
    if (id_of(arg, &id) < 0)
        return NULL;
    lock_released(self);
    PyObject *out = Py_NewRef(Py_None);
    for (Peer **link = self->closed ? NULL : &self->peers; link && *link; link = &(*link)->next) {
        Peer *p = *link;
        if (p->id != id)
            continue;
        close_peer(self, p);
        Py_DECREF(out);
        out = peer_tuple(p);
        *link = p->next;
        free(p->in);
        free(p);
        break;
    }
    pthread_mutex_unlock(&self->lock);
    return out;
}

static PyObject *
Relay_take_events(Relay *self, PyObject *unused)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    lock_released(self);
    uint64_t count;
    if (!self->closed)
        (void)!read(self->eventfd, &count, sizeof count);
    Event *ev = self->ev_head;
    self->ev_head = self->ev_tail = NULL;
    pthread_mutex_unlock(&self->lock);
    int failed = 0;
    while (ev) {
        Event *next = ev->next;
        if (!failed) {
            PyObject *item;
            if (ev->type == EV_CONTROL)
                item = Py_BuildValue("(iLLy#)", ev->type, ev->id, ev->a,
                                     ev->body ? (char *)ev->body : "", (Py_ssize_t)ev->body_len);
            else
                item = Py_BuildValue("(iLLLL)", ev->type, ev->id, ev->a, ev->b, ev->c);
            if (item == NULL || PyList_Append(out, item) < 0)
                failed = 1;
            Py_XDECREF(item);
        }
        free(ev->body);
        free(ev);
        ev = next;
    }
    if (failed) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
Relay_statistics(Relay *self, PyObject *unused)
{
    lock_released(self);
    PyObject *sizes = PyTuple_New(self->nbuckets + 1);
    for (int i = 0; sizes && i <= self->nbuckets; i++)
        PyTuple_SET_ITEM(sizes, i, PyLong_FromUnsignedLongLong(self->size_counts[i]));
    PyObject *out = sizes == NULL ? NULL
                                  : Py_BuildValue("(KKKKKKN)", self->broadcasts, self->deliveries,
                                                  self->bytes_in, self->bytes_out,
                                                  self->relayed_bytes, self->next_seq, sizes);
    pthread_mutex_unlock(&self->lock);
    return out;
}

static PyObject *
Relay_close(Relay *self, PyObject *unused)
{
    shut(self);
    Py_RETURN_NONE;
}

static PyMethodDef Relay_methods[] = {
    {"fileno", (PyCFunction)Relay_fileno, METH_NOARGS, "The eventfd that is readable when events wait."},
    {"add", (PyCFunction)Relay_add, METH_VARARGS,
     "add(id, fd, sender, address, member, limit, initial): relay a handshaken peer."},
    {"accepting", (PyCFunction)Relay_accepting, METH_VARARGS,
     "accepting(id, flag): whether DIRECT frames for its address reach it (else they bounce)."},
    {"send", (PyCFunction)Relay_send, METH_VARARGS,
     "send(id, frame) -> bool: queue a frame for one peer; True if its queue is over the limit."},
    {"broadcast", (PyCFunction)Relay_broadcast, METH_O,
     "broadcast(frame) -> seq: stamp a BROADCAST frame (sender 0) and send it to every member."},
    {"resume", (PyCFunction)Relay_resume, METH_O, "resume(id): its control frame is handled."},
    {"parked", (PyCFunction)Relay_parked, METH_O,
     "parked(id): a control frame it sent waits for Python (read, not yet handled)."},
    {"cut_off", (PyCFunction)Relay_cut_off, METH_O, "cut_off(id): close its connection."},
    {"peer_statistics", (PyCFunction)Relay_peer_statistics, METH_O,
     "peer_statistics(id) -> (messages_in, messages_out, bytes_in, bytes_out, pending, peak)"},
    {"remove", (PyCFunction)Relay_remove, METH_O,
     "remove(id) -> final peer_statistics, or None: forget a peer (closing it)."},
    {"take_events", (PyCFunction)Relay_take_events, METH_NOARGS, "Every event waiting, in order."},
    {"statistics", (PyCFunction)Relay_statistics, METH_NOARGS,
     "(broadcasts, deliveries, bytes_in, bytes_out, relayed_bytes, next_seq, size_counts)"},
    {"close", (PyCFunction)Relay_close, METH_NOARGS, "Stop and join the thread; close everything."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stereo.master._relay.Relay",
    .tp_basicsize = sizeof(Relay),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The hub's data plane: an epoll loop on its own thread.",
    .tp_new = Relay_new,
    .tp_init = (initproc)Relay_init,
    .tp_dealloc = (destructor)Relay_dealloc,
    .tp_methods = Relay_methods,
};

static struct PyModuleDef relay_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stereo.master._relay",
    .m_doc = "The hub's data plane in C (see stereo/master/cplane.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__relay(void)
{
    if (PyType_Ready(&RelayType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&relay_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Relay", (PyObject *)&RelayType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
