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
 * nesting_exceeds() walks an encoded CBOR item without recursion, to tell whether it nests
 * deeper than the receivers' decoder accepts (the sender refuses such a value).
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

PyDoc_STRVAR(decode_broadcasts_doc,
"decode_broadcasts(buffer, offset, max_length, copy_below, kind, loads, message_type, out) -> int\n"
"\n"
"Decode the complete broadcast frames of ``buffer`` from ``offset`` on, appending\n"
"``message_type((loads(payload), sender, seq))`` to ``out``; return the offset of the first\n"
"frame not handled (see the module comment).");

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

    for (;;) {
        /* Re-read both on every frame: loads runs arbitrary code (tag hooks), which could in
           principle resize the bytearray. */
        Py_ssize_t end = PyByteArray_GET_SIZE(buffer);
        if (end - offset < HEADER_SIZE) {
            break;
        }
        const unsigned char *frame = (const unsigned char *)PyByteArray_AS_STRING(buffer) + offset;
        Py_ssize_t length = (Py_ssize_t)read_u32(frame);
        if (frame[PREFIX_SIZE] != kind || length > max_length || length < 1 + STAMP_SIZE) {
            break; /* Python raises the ProtocolError with its message */
        }
        Py_ssize_t stop = offset + PREFIX_SIZE + length;
        Py_ssize_t size = length - 1 - STAMP_SIZE;
        if (stop > end || size >= copy_below) {
            break;
        }
        uint64_t seq = read_u64(frame + PREFIX_SIZE + 1);
        uint32_t sender = read_u32(frame + PREFIX_SIZE + 9);

        PyObject *payload = PyBytes_FromStringAndSize((const char *)frame + HEADER_SIZE, size);
        if (payload == NULL) {
            return NULL;
        }
        PyObject *value = PyObject_CallOneArg(loads, payload);
        Py_DECREF(payload);
        if (value == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                return NULL; /* KeyboardInterrupt and the like go up */
            }
            PyErr_Clear(); /* Python decodes it again and wraps the error */
            break;
        }
        PyObject *sender_obj = PyLong_FromUnsignedLong(sender);
        PyObject *seq_obj = PyLong_FromUnsignedLongLong(seq);
        PyObject *message = message_type->tp_alloc(message_type, 3);
        if (sender_obj == NULL || seq_obj == NULL || message == NULL) {
            Py_DECREF(value);
            Py_XDECREF(sender_obj);
            Py_XDECREF(seq_obj);
            Py_XDECREF(message);
            return NULL;
        }
        PyTuple_SET_ITEM(message, 0, value);
        PyTuple_SET_ITEM(message, 1, sender_obj);
        PyTuple_SET_ITEM(message, 2, seq_obj);
        int failed = PyList_Append(out, message);
        Py_DECREF(message);
        if (failed) {
            return NULL;
        }
        offset = stop;
    }
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

/* A stack entry of nesting_exceeds for a container of indefinite length (closed by 0xff). */
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

/* 1: an item of the first data item in p[0:n] is enclosed in more than `limit` containers
   (arrays, maps, tags), as cbor2's decoder counts them: the break ending an array or map of
   indefinite length counts as an item in it, the chunks of a string of indefinite length do not.
   0: it is not, or the data is not well-formed CBOR (not a question of depth). */
static int
nesting_exceeds_impl(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit, uint64_t *stack)
{
    Py_ssize_t pos = 0;
    Py_ssize_t depth = 0; /* containers open around the next item */
    uint64_t arg;
    int indefinite;
    while (pos < n) {
        unsigned char initial = p[pos++];
        if (initial == 0xff) { /* break: ends the innermost container of indefinite length */
            if (depth == 0 || stack[depth - 1] != INDEFINITE) {
                return 0;
            }
            if (depth > limit) {
                return 1; /* cbor2 reads it as one more item inside that container */
            }
            depth--;
        }
        else {
            if (depth > limit) {
                return 1;
            }
            unsigned major = initial >> 5;
            if (read_argument(p, n, &pos, initial & 0x1f, &arg, &indefinite) < 0 ||
                (indefinite && (major < 2 || major > 5))) {
                return 0; /* only strings, arrays and maps have an indefinite length */
            }
            if (major == 2 || major == 3) {
                if (indefinite) { /* chunks of the same major type, up to a break */
                    for (;;) {
                        if (pos >= n) {
                            return 0;
                        }
                        unsigned char chunk = p[pos++];
                        if (chunk == 0xff) {
                            break;
                        }
                        if (chunk >> 5 != major ||
                            read_argument(p, n, &pos, chunk & 0x1f, &arg, &indefinite) < 0 ||
                            indefinite || arg > (uint64_t)(n - pos)) {
                            return 0;
                        }
                        pos += (Py_ssize_t)arg;
                    }
                }
                else if (arg > (uint64_t)(n - pos)) {
                    return 0;
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
                        return 0;
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
            return 0;
        }
    }
    return 0; /* truncated */
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
    int result =
        nesting_exceeds_impl((const unsigned char *)PyBytes_AS_STRING(args[0]), n, limit, stack);
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
    return PyModule_Create(&speedups_module);
}
