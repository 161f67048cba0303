/*
 * stereo.wire._speedups: the worker's hot loop in C (optional; stereo/wire/protocol.py has the reference
 * implementation in Python and falls back to it when this module is not built).
 *
 * decode_broadcasts() walks complete BROADCAST frames in a bytearray, decodes each payload with
 * the given ``loads`` and appends one Message (a tuple subclass: data, sender, seq) per frame.
 * It stops, without raising, at the first frame it does not handle itself: an incomplete one, a
 * header the Python code must reject, a payload too big for a copy (decoded in place by Python)
 * or one that does not decode (Python wraps it in UndecodablePayload). The caller deals with that
 * frame and calls again, so the two implementations give the same results by construction.
 *
 * A run of consecutive small payloads is decoded with ONE ``loads`` call, of a CBOR array head
 * followed by the payloads: cbor2 6 costs a fixed overhead per call (~335 ns for a 78-byte
 * payload alone, ~205 ns as one item of a long array). A payload joins a run only if a walk of
 * its bytes shows it decodes inside the array as it does alone: one well-formed item ending at
 * the payload's end, no tag anywhere (value sharing and string references keep state across a
 * whole call; a tag may run a hook) and room under the depth limit for the array's level.
 * Anything else is decoded on its own, in its place; if the bulk call fails (invalid UTF-8, which
 * the walk does not check) the run is decoded one payload at a time, so values and errors stay
 * what one call per payload gives.
 *
 * nesting_exceeds() uses the same walk (cbor_walk) to tell whether an encoded item nests deeper
 * than the receivers' decoder accepts (the sender refuses such a value).
 *
 * ready(value) is an awaitable that completes at once with ``value``, without a frame or an
 * exception: what MessageStream.__anext__ returns for a message already queued, so that
 * ``async for msg in stream`` costs no coroutine per message.
 *
 * Frame layout (docs/protocol.md): u32 length (of what follows), u8 kind, u64 seq, u32 sender,
 * payload; all big-endian.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 17
#define PREFIX_SIZE 4
#define STAMP_SIZE 12

static inline uint32_t
read_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t
read_u64(const unsigned char *p)
{
    return ((uint64_t)read_u32(p) << 32) | read_u32(p + 4);
}

/* What cbor_walk found in the first data item of its bytes. */
typedef enum {
    WALK_ILL_FORMED, /* truncated or not well-formed CBOR */
    WALK_TOO_DEEP,   /* an item enclosed in more than `limit` containers (arrays, maps, tags) */
    WALK_TAGGED,     /* a tag (only when asked to stop at one) */
    WALK_COMPLETE,   /* a well-formed item, ending at *end, within the limit */
} WalkResult;

static WalkResult cbor_walk(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit,
                            uint64_t *stack, int stop_at_tag, Py_ssize_t *end);

/* A run of frames decode_broadcasts decodes with one loads call: enough for a whole read (a
   64 KiB chunk holds some 700 small broadcasts) while bounding the copy it makes. */
#define BULK_MAX_ITEMS 1024
#define BULK_MAX_BYTES (256 * 1024)
/* Bounds the walk's stack: a payload nested deeper is decoded on its own (cbor2's default
   limit is 400). */
#define BULK_MAX_DEPTH 1024

/* The deepest nesting a payload may have to join a bulk call: cbor2's limit
   (stereo.wire.nesting.MAX_DEPTH, read when the module loads) less the level the enclosing
   array adds. -1: no bulk calls. */
static Py_ssize_t bulk_limit = -1;

typedef struct {
    Py_ssize_t stop; /* offset of the next frame */
    Py_ssize_t size; /* of the payload, which ends the frame */
    uint64_t seq;
    uint32_t sender;
} FrameInfo;

/* 1 if the frame at offset is one decode_broadcasts decodes itself: complete, of the expected
   kind, with a valid length and a payload under copy_below; *f gets its fields. 0 otherwise:
   Python raises the ProtocolError for a bad header, with its message, and decodes a big payload
   in place. */
static inline int
small_frame(const unsigned char *base, Py_ssize_t end, Py_ssize_t offset, Py_ssize_t max_length,
            Py_ssize_t copy_below, long kind, FrameInfo *f)
{
    if (end - offset < HEADER_SIZE) {
        return 0;
    }
    const unsigned char *frame = base + offset;
    Py_ssize_t length = (Py_ssize_t)read_u32(frame);
    if (frame[PREFIX_SIZE] != kind || length > max_length || length < 1 + STAMP_SIZE) {
        return 0;
    }
    f->stop = offset + PREFIX_SIZE + length;
    f->size = length - 1 - STAMP_SIZE;
    if (f->stop > end || f->size >= copy_below) {
        return 0;
    }
    f->seq = read_u64(frame + PREFIX_SIZE + 1);
    f->sender = read_u32(frame + PREFIX_SIZE + 9);
    return 1;
}

/* Append message_type((value, sender, seq)) to out, taking over the reference to value.
   Returns 0, or -1 with an exception set. */
static int
append_message(PyObject *out, PyTypeObject *message_type, PyObject *value, const FrameInfo *f)
{
    PyObject *sender_obj = PyLong_FromUnsignedLong(f->sender);
    PyObject *seq_obj = PyLong_FromUnsignedLongLong(f->seq);
    PyObject *message = message_type->tp_alloc(message_type, 3);
    if (sender_obj == NULL || seq_obj == NULL || message == NULL) {
        Py_DECREF(value);
        Py_XDECREF(sender_obj);
        Py_XDECREF(seq_obj);
        Py_XDECREF(message);
        return -1;
    }
    PyTuple_SET_ITEM(message, 0, value);
    PyTuple_SET_ITEM(message, 1, sender_obj);
    PyTuple_SET_ITEM(message, 2, seq_obj);
    int failed = PyList_Append(out, message);
    Py_DECREF(message);
    return failed ? -1 : 0;
}

/* Decode one payload with loads and append its Message. 1: done; 0: loads refused it (an
   Exception, cleared: Python decodes it again and wraps the error); -1: an exception to raise
   (KeyboardInterrupt and the like go up). */
static int
decode_one(const unsigned char *data, const FrameInfo *f, PyObject *loads,
           PyTypeObject *message_type, PyObject *out)
{
    PyObject *payload = PyBytes_FromStringAndSize((const char *)data, f->size);
    if (payload == NULL) {
        return -1;
    }
    PyObject *value = PyObject_CallOneArg(loads, payload);
    Py_DECREF(payload);
    if (value == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    return append_message(out, message_type, value, f) < 0 ? -1 : 1;
}

/* Whether a payload decodes inside a CBOR array exactly as it does alone, so that it may join
   a bulk loads call: one well-formed item that ends where the payload does (cbor2 ignores what
   follows an item, an array would not), no tag anywhere (cbor2's value sharing, tags 28/29, and
   string references, tags 256/25, keep state across a whole loads call, and a tag may run a
   hook), and room for the array's level under the depth limit. A payload this lets through can
   still fail (invalid UTF-8, say): decode_run then decodes its run one payload at a time. */
static inline int
bulk_eligible(const unsigned char *payload, Py_ssize_t size, uint64_t *stack)
{
    Py_ssize_t end;
    return cbor_walk(payload, size, bulk_limit, stack, 1, &end) == WALK_COMPLETE && end == size;
}

/* The frames from `first` (a small frame) on that may share one loads call, into run (at most
   BULK_MAX_ITEMS, their payloads at most BULK_MAX_BYTES together unless there is one); returns
   how many, and the payloads' total size in *total. The frame after them is not eligible, or
   did not fit. */
static Py_ssize_t
gather_run(const unsigned char *base, Py_ssize_t end, const FrameInfo *first,
           Py_ssize_t max_length, Py_ssize_t copy_below, long kind, uint64_t *stack,
           FrameInfo *run, Py_ssize_t *total)
{
    Py_ssize_t count = 0;
    Py_ssize_t bytes = 0;
    run[0] = *first;
    do {
        const FrameInfo *f = &run[count];
        if ((count > 0 && bytes + f->size > BULK_MAX_BYTES) ||
            !bulk_eligible(base + f->stop - f->size, f->size, stack)) {
            break;
        }
        bytes += f->size;
        count++;
    } while (count < BULK_MAX_ITEMS && small_frame(base, end, run[count - 1].stop, max_length,
                                                   copy_below, kind, &run[count]));
    *total = bytes;
    return count;
}

/* Decode the payloads of a run gathered from offset with ONE loads call, of a CBOR array
   holding them all (cbor2 6 costs a fixed overhead per call), and append their Messages. If
   that call fails or returns anything but a list of count items, decode them one at a time as
   the single-frame path does, so values and errors are what that path gives. Returns the
   offset after the frames taken (short of the run's end at a payload loads refuses), or -1
   with an exception set. */
static Py_ssize_t
decode_run(const unsigned char *base, Py_ssize_t offset, const FrameInfo *run, Py_ssize_t count,
           Py_ssize_t total, PyObject *loads, PyTypeObject *message_type, PyObject *out)
{
    /* The array's head: count < BULK_MAX_ITEMS < 2**16 fits in two bytes of argument. */
    Py_ssize_t head = count < 24 ? 1 : count < 256 ? 2 : 3;
    PyObject *bulk = PyBytes_FromStringAndSize(NULL, head + total);
    if (bulk == NULL) {
        return -1;
    }
    unsigned char *data = (unsigned char *)PyBytes_AS_STRING(bulk);
    if (head == 1) {
        data[0] = (unsigned char)(0x80 | count);
    }
    else {
        data[0] = head == 2 ? 0x98 : 0x99;
        if (head == 3) {
            data[1] = (unsigned char)(count >> 8);
        }
        data[head - 1] = (unsigned char)count;
    }
    unsigned char *next = data + head;
    for (Py_ssize_t i = 0; i < count; i++) {
        memcpy(next, base + run[i].stop - run[i].size, (size_t)run[i].size);
        next += run[i].size;
    }

    PyObject *values = PyObject_CallOneArg(loads, bulk);
    if (values == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(bulk);
            return -1;
        }
        PyErr_Clear();
    }
    else if (PyList_CheckExact(values) && PyList_GET_SIZE(values) == count) {
        Py_DECREF(bulk);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *value = PyList_GET_ITEM(values, i);
            Py_INCREF(value);
            if (append_message(out, message_type, value, &run[i]) < 0) {
                Py_DECREF(values);
                return -1;
            }
        }
        Py_DECREF(values);
        return run[count - 1].stop;
    }
    else {
        Py_DECREF(values);
    }

    /* From the copy: the bytearray is not to be trusted once loads has run. */
    next = data + head;
    for (Py_ssize_t i = 0; i < count; i++) {
        int done = decode_one(next, &run[i], loads, message_type, out);
        if (done <= 0) {
            Py_DECREF(bulk);
            return done < 0 ? -1 : i == 0 ? offset : run[i - 1].stop;
        }
        next += run[i].size;
    }
    Py_DECREF(bulk);
    return run[count - 1].stop;
}

PyDoc_STRVAR(decode_broadcasts_doc,
"decode_broadcasts(buffer, offset, max_length, copy_below, kind, loads, message_type, out) -> int\n"
"\n"
"Decode the complete broadcast frames of ``buffer`` from ``offset`` on, appending\n"
"``message_type((loads(payload), sender, seq))`` to ``out``; return the offset of the first\n"
"frame not handled (see the module comment). Runs of tag-free payloads are decoded with one\n"
"call of ``loads`` on a CBOR array of them, which must give the list of what ``loads`` gives\n"
"for each (cbor2.loads does).");

static PyObject *
decode_broadcasts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "decode_broadcasts() takes exactly 8 arguments");
        return NULL;
    }
    PyObject *buffer = args[0];
    PyObject *loads = args[5];
    PyObject *type_obj = args[6];
    PyObject *out = args[7];
    if (!PyByteArray_Check(buffer)) {
        PyErr_SetString(PyExc_TypeError, "buffer must be a bytearray");
        return NULL;
    }
    if (!PyType_Check(type_obj) || !PyType_IsSubtype((PyTypeObject *)type_obj, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "message_type must be a tuple subclass");
        return NULL;
    }
    if (!PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "out must be a list");
        return NULL;
    }
    PyTypeObject *message_type = (PyTypeObject *)type_obj;
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_length = PyLong_AsSsize_t(args[2]);
    Py_ssize_t copy_below = PyLong_AsSsize_t(args[3]);
    long kind = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must not be negative");
        return NULL;
    }

    FrameInfo *run = NULL; /* allocated at the first run, with the walk's stack after it */
    uint64_t *stack = NULL;
    Py_ssize_t alone = 0; /* frames to decode one at a time before looking for a run again */
    for (;;) {
        /* Re-read both on every frame: loads runs arbitrary code (tag hooks), which could in
           principle resize the bytearray. */
        Py_ssize_t end = PyByteArray_GET_SIZE(buffer);
        const unsigned char *base = (const unsigned char *)PyByteArray_AS_STRING(buffer);
        FrameInfo f;
        FrameInfo next;
        if (!small_frame(base, end, offset, max_length, copy_below, kind, &f)) {
            break;
        }
        if (alone > 0) {
            alone--;
        }
        /* Not for a lone frame (a quiet worker's read): no allocation, no walk. */
        else if (bulk_limit >= 0 &&
                 (run != NULL || small_frame(base, end, f.stop, max_length, copy_below, kind,
                                             &next))) {
            if (run == NULL) {
                run = PyMem_Malloc(BULK_MAX_ITEMS * sizeof(FrameInfo) +
                                   (size_t)(bulk_limit + 1) * sizeof(uint64_t));
                if (run == NULL) {
                    PyErr_NoMemory();
                    return NULL;
                }
                stack = (uint64_t *)(run + BULK_MAX_ITEMS);
            }
            Py_ssize_t total;
            Py_ssize_t count =
                gather_run(base, end, &f, max_length, copy_below, kind, stack, run, &total);
            if (count >= 2) {
                Py_ssize_t stop =
                    decode_run(base, offset, run, count, total, loads, message_type, out);
                if (stop < 0) {
                    PyMem_Free(run);
                    return NULL;
                }
                int complete = stop == run[count - 1].stop;
                offset = stop;
                if (!complete) {
                    break; /* at a payload loads refuses */
                }
                continue;
            }
            alone = count; /* a lone eligible frame: the one that ended its run comes alone too */
        }
        int done = decode_one(base + HEADER_SIZE + offset, &f, loads, message_type, out);
        if (done < 0) {
            PyMem_Free(run);
            return NULL;
        }
        if (done == 0) {
            break;
        }
        offset = f.stop;
    }
    PyMem_Free(run);
    return PyLong_FromSsize_t(offset);
}

PyDoc_STRVAR(frame_broadcast_doc,
"frame_broadcast(payload, kind) -> bytes\n"
"\n"
"A worker's BROADCAST frame for an encoded payload: length, kind, zero seq and sender (the\n"
"master stamps them), then the payload; one allocation instead of a pack and a concatenation.");

static PyObject *
frame_broadcast(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "frame_broadcast(payload: bytes, kind: int)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[1]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t length = size + 1 + STAMP_SIZE;
    if (length > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "payload too large for a frame");
        return NULL;
    }
    PyObject *frame = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + size);
    if (frame == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(frame);
    out[0] = (unsigned char)(length >> 24);
    out[1] = (unsigned char)(length >> 16);
    out[2] = (unsigned char)(length >> 8);
    out[3] = (unsigned char)length;
    out[4] = (unsigned char)kind;
    memset(out + PREFIX_SIZE + 1, 0, STAMP_SIZE);
    memcpy(out + HEADER_SIZE, PyBytes_AS_STRING(args[0]), (size_t)size);
    return frame;
}

/* A stack entry of cbor_walk for a container of indefinite length (closed by 0xff). */
#define INDEFINITE UINT64_MAX

/* The argument of the head at p[*pos] whose initial byte was just read (info: its low 5 bits).
   Returns 0, or -1 when the head runs past the end or uses a reserved value; *indefinite is set
   for info 31. */
static inline int
read_argument(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos, unsigned info, uint64_t *arg,
              int *indefinite)
{
    *indefinite = 0;
    if (info < 24) {
        *arg = info;
        return 0;
    }
    if (info == 31) {
        *indefinite = 1;
        *arg = 0;
        return 0;
    }
    if (info > 27) {
        return -1;
    }
    Py_ssize_t size = (Py_ssize_t)1 << (info - 24);
    if (n - *pos < size) {
        return -1;
    }
    uint64_t value = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        value = (value << 8) | p[*pos + i];
    }
    *pos += size;
    *arg = value;
    return 0;
}

/* Walk the first data item of p[0:n] without recursion, counting nesting as cbor2's decoder
   does: the break ending an array or map of indefinite length counts as an item in it, the
   chunks of a string of indefinite length do not. `stack` holds limit + 1 entries. Reports
   WALK_TOO_DEEP as soon as it gets there, even if the rest is not well-formed (the sender's
   check); with stop_at_tag, WALK_TAGGED at the first tag (decode_broadcasts' bulk check).
   Invalid UTF-8 and simple values cbor2 refuses are not its business: it checks structure. */
static WalkResult
cbor_walk(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit, uint64_t *stack, int stop_at_tag,
          Py_ssize_t *end)
{
    Py_ssize_t pos = 0;
    Py_ssize_t depth = 0; /* containers open around the next item */
    uint64_t arg;
    int indefinite;
    while (pos < n) {
        unsigned char initial = p[pos++];
        if (initial == 0xff) { /* break: ends the innermost container of indefinite length */
            if (depth == 0 || stack[depth - 1] != INDEFINITE) {
                return WALK_ILL_FORMED;
            }
            if (depth > limit) {
                return WALK_TOO_DEEP; /* cbor2 reads it as one more item inside that container */
            }
            depth--;
        }
        else {
            if (depth > limit) {
                return WALK_TOO_DEEP;
            }
            unsigned major = initial >> 5;
            if (read_argument(p, n, &pos, initial & 0x1f, &arg, &indefinite) < 0 ||
                (indefinite && (major < 2 || major > 5))) {
                return WALK_ILL_FORMED; /* only strings, arrays, maps have an indefinite length */
            }
            if (major == 6 && stop_at_tag) {
                return WALK_TAGGED;
            }
            if (major == 2 || major == 3) {
                if (indefinite) { /* chunks of the same major type, up to a break */
                    for (;;) {
                        if (pos >= n) {
                            return WALK_ILL_FORMED;
                        }
                        unsigned char chunk = p[pos++];
                        if (chunk == 0xff) {
                            break;
                        }
                        if (chunk >> 5 != major ||
                            read_argument(p, n, &pos, chunk & 0x1f, &arg, &indefinite) < 0 ||
                            indefinite || arg > (uint64_t)(n - pos)) {
                            return WALK_ILL_FORMED;
                        }
                        pos += (Py_ssize_t)arg;
                    }
                }
                else if (arg > (uint64_t)(n - pos)) {
                    return WALK_ILL_FORMED;
                }
                else {
                    pos += (Py_ssize_t)arg;
                }
            }
            else if (major == 4 || major == 5 || major == 6) {
                if (major == 6) {
                    arg = 1; /* a tag encloses one item */
                }
                else if (indefinite) {
                    arg = INDEFINITE;
                }
                else {
                    /* Every item takes a byte at least: more than that cannot be well-formed
                       (and the doubling for a map's keys cannot overflow). */
                    if (arg > (uint64_t)(n - pos)) {
                        return WALK_ILL_FORMED;
                    }
                    if (major == 5) {
                        arg *= 2;
                    }
                }
                if (arg != 0) {
                    stack[depth++] = arg;
                    continue; /* its first item comes next */
                }
            }
        }
        /* An item is complete: count it in its container, and close every container it
           completes in turn. */
        while (depth > 0 && stack[depth - 1] != INDEFINITE) {
            if (--stack[depth - 1] > 0) {
                break;
            }
            depth--;
        }
        if (depth == 0) {
            *end = pos;
            return WALK_COMPLETE;
        }
    }
    return WALK_ILL_FORMED; /* truncated */
}

PyDoc_STRVAR(nesting_exceeds_doc,
"nesting_exceeds(data, limit) -> bool\n"
"\n"
"Whether an item of the CBOR data item ``data`` is enclosed in more than ``limit`` arrays,\n"
"maps and tags, as cbor2's decoder counts them (False for data that is not well-formed).");

static PyObject *
nesting_exceeds(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "nesting_exceeds(data: bytes, limit: int)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must not be negative");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (n <= limit) { /* every container takes a byte: too short to nest that deep */
        Py_RETURN_FALSE;
    }
    uint64_t *stack = PyMem_New(uint64_t, (size_t)limit + 1);
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t end;
    int result = cbor_walk((const unsigned char *)PyBytes_AS_STRING(args[0]), n, limit, stack, 0,
                           &end) == WALK_TOO_DEEP;
    PyMem_Free(stack);
    return PyBool_FromLong(result);
}

/* ready(value): awaiting it returns value at once (am_send; tp_iternext for the traced path). */
typedef struct {
    PyObject_HEAD
    PyObject *value; /* NULL once awaited */
} ReadyObject;

static PyTypeObject Ready_Type;

static PyObject *
ready_new(PyObject *module, PyObject *value)
{
    ReadyObject *self = PyObject_New(ReadyObject, &Ready_Type);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(value);
    self->value = value;
    return (PyObject *)self;
}

static void
ready_dealloc(ReadyObject *self)
{
    Py_XDECREF(self->value);
    PyObject_Free(self);
}

static PyObject *
ready_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PyObject *
ready_take(ReadyObject *self)
{
    PyObject *value = self->value;
    if (value == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited ready value");
    }
    self->value = NULL;
    return value;
}

static PySendResult
ready_send(PyObject *self, PyObject *arg, PyObject **result)
{
    *result = ready_take((ReadyObject *)self);
    return *result == NULL ? PYGEN_ERROR : PYGEN_RETURN;
}

static PyObject *
ready_iternext(PyObject *self)
{
    PyObject *value = ready_take((ReadyObject *)self);
    if (value == NULL) {
        return NULL;
    }
    /* An instance, so that a tuple value (a Message) is not taken for the exception's args. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_DECREF(value);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyAsyncMethods ready_as_async = {
    .am_await = ready_await,
    .am_send = ready_send,
};

static PyTypeObject Ready_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stereo.wire._speedups.Ready",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_as_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that completes at once with its value.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_iternext,
};

PyDoc_STRVAR(ready_doc,
"ready(value) -> awaitable\n"
"\n"
"An awaitable whose ``await`` returns ``value`` at once, without yielding.");

static PyMethodDef speedups_methods[] = {
    {"ready", (PyCFunction)ready_new, METH_O, ready_doc},
    {"nesting_exceeds", (PyCFunction)(void (*)(void))nesting_exceeds, METH_FASTCALL,
     nesting_exceeds_doc},
    {"frame_broadcast", (PyCFunction)(void (*)(void))frame_broadcast, METH_FASTCALL,
     frame_broadcast_doc},
    {"decode_broadcasts", (PyCFunction)(void (*)(void))decode_broadcasts, METH_FASTCALL,
     decode_broadcasts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stereo.wire._speedups",
    .m_doc = "C versions of stereo's hottest protocol loops (optional).",
    .m_size = 0,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&Ready_Type) < 0) {
        return NULL;
    }
    /* The receivers' depth limit, as the sender's check reads it (a Python module with no
       import of this one). */
    PyObject *nesting = PyImport_ImportModule("stereo.wire.nesting");
    if (nesting == NULL) {
        return NULL;
    }
    PyObject *depth = PyObject_GetAttrString(nesting, "MAX_DEPTH");
    Py_DECREF(nesting);
    if (depth == NULL) {
        return NULL;
    }
    Py_ssize_t max_depth = PyLong_AsSsize_t(depth);
    Py_DECREF(depth);
    if (max_depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    bulk_limit = (max_depth < BULK_MAX_DEPTH ? max_depth : BULK_MAX_DEPTH) - 1;
    return PyModule_Create(&speedups_module);
}
