// The exact check of pycocotools' compressed RLE counts strings, before pycocotools sees them.
//
// pycocotools trusts the run lengths of a mask: decoding one whose runs add up to more than
// height * width writes out of bounds, and the IoU walk over two RLEs loops (almost) forever when
// a run is negative (a uint32 of about 4e9). This decodes every string exactly as pycocotools'
// rleFrString does and accepts it only where pycocotools would read the same runs and they cover
// the frame exactly:
//
// * each character is one 5-bit chunk plus 48 ('0' .. 'o'); 0x20 says another chunk of the same
//   number follows, 0x10 in the last chunk is the sign (two's complement over 5 * chunks bits);
// * runs 0, 1 and 2 are stored as they are, run i > 2 as the difference to run i - 2;
// * every run is >= 0 (empty runs are allowed anywhere, as in pycocotools) and the runs sum to
//   height * width; the running total is checked after each run, so a check stops at the first
//   run that overshoots the frame and no sum can overflow.
//
// pycocotools computes a number in C `int` arithmetic: chunk k is shifted by 5 * k bits, and a
// negative number is sign-extended with `-1 << 5 * chunks`. That is defined up to 6 chunks. A 7th
// chunk with the sign bit shifts -1 by 35 bits, undefined in C, and pycocotools' wheels decode such
// a number to another value (tests/test_rle_check.py shows it), so a negative number of 7 chunks is
// rejected. A non-negative one of 7 chunks keeps its low 32 bits, all that pycocotools' uint32 run
// lengths keep (the evaluator's IoU canvases rely on this for first runs of 2**31 and more).
// An 8th chunk can only encode bits beyond a uint32 and is rejected, as it always was here.
#include "rle_check.h"

#include <cstring>

namespace ctvis {

namespace {

constexpr int kFirstChar = 48;   // '0'
constexpr int kLastChar = 111;   // 'o'
constexpr int kMoreBit = 0x20;   // another chunk of the number follows
constexpr int kSignBit = 0x10;   // in the last chunk: the number is negative
constexpr int kMaxChunks = 7;    // enough for any uint32 run length or difference

RleCheck fail(RleProblem problem, int64_t where, int64_t value = 0) {
  return RleCheck{problem, where, value, 0, 0, 0, 0};
}

}  // namespace

RleCheck check_rle_string(const uint8_t* chars, int64_t length, int64_t pixels) {
  if (length == 0) return fail(kRleEmpty, 0);
  RleCheck result{kRleOk, 0, 0, 0, 0, 0, 0};
  int64_t run_before_last = 0, last_run = 0;  // runs i - 2 and i - 1
  int64_t total = 0, run_index = 0, offset = 0;
  while (offset < length) {
    int64_t number = 0;
    int chunks = 0, code = 0;
    while (true) {
      const int character = chars[offset];
      if (character < kFirstChar || character > kLastChar) {
        return fail(kRleBadCharacter, offset, character);
      }
      if (chunks == kMaxChunks) return fail(kRleTooManyChunks, run_index);
      code = character - kFirstChar;
      number |= static_cast<int64_t>(code & 0x1f) << (5 * chunks);
      ++offset;
      ++chunks;
      if (!(code & kMoreBit)) break;
      if (offset == length) return fail(kRleTruncated, run_index);
    }
    if (code & kSignBit) {
      if (chunks == kMaxChunks) return fail(kRleWideNegative, run_index);
      number -= static_cast<int64_t>(1) << (5 * chunks);
    }
    // |number| < 2**35 and 0 <= run_before_last <= pixels: no overflow anywhere.
    const int64_t run = run_index > 2 ? number + run_before_last : number;
    if (run < 0) return fail(kRleNegativeRun, run_index, run);
    total += run;
    if (total > pixels) return fail(kRleBeyondFrame, run_index, total);
    if (run_index & 1) result.area += run;
    if (run == 0 && run_index > 0) ++result.empty_runs;
    if (run_index == 0) {
      result.first = run;
      result.first_end = offset;
    }
    run_before_last = last_run;
    last_run = run;
    ++run_index;
  }
  if (total != pixels) return fail(kRleShort, run_index, total);
  return result;
}

namespace {

// Fields of the `out` array, one row of n each.
constexpr int kOutFields = 7;

int64_t read_int64(const Py_buffer& buffer, Py_ssize_t index) {
  int64_t value;
  std::memcpy(&value, static_cast<const char*>(buffer.buf) + index * sizeof(int64_t),
              sizeof(int64_t));
  return value;
}

struct Buffers {
  Py_buffer chars, ends, pixels, out;
  ~Buffers() {
    PyBuffer_Release(&chars);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&pixels);
    PyBuffer_Release(&out);
  }
};

// Checks the sizes of the buffers and the offsets; sets a ValueError and returns false if wrong.
bool valid_arguments(const Buffers& b, Py_ssize_t n) {
  const Py_ssize_t word = sizeof(int64_t);
  if (b.ends.len % word || b.pixels.len != b.ends.len || b.out.len != kOutFields * b.ends.len) {
    PyErr_Format(PyExc_ValueError,
                 "check_rle_strings: ends and pixels must be int64 arrays of one length n and "
                 "out an int64 array of %d * n (got %zd, %zd and %zd bytes)",
                 kOutFields, b.ends.len, b.pixels.len, b.out.len);
    return false;
  }
  int64_t previous = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const int64_t end = read_int64(b.ends, i);
    if (end < previous || end > b.chars.len) {
      PyErr_Format(PyExc_ValueError,
                   "check_rle_strings: ends must be non-decreasing offsets into chars (%zd "
                   "characters); ends[%zd] = %lld",
                   b.chars.len, i, static_cast<long long>(end));
      return false;
    }
    if (read_int64(b.pixels, i) < 0) {
      PyErr_Format(PyExc_ValueError, "check_rle_strings: pixels[%zd] is negative", i);
      return false;
    }
    previous = end;
  }
  return true;
}

}  // namespace

PyObject* check_rle_strings(PyObject* /*self*/, PyObject* args) {
  Buffers b{};
  // y*: any read-only bytes-like object (bytes, a numpy array); w*: a writable one.
  if (!PyArg_ParseTuple(args, "y*y*y*w*:check_rle_strings", &b.chars, &b.ends, &b.pixels,
                        &b.out)) {
    return nullptr;
  }
  const Py_ssize_t n = b.ends.len / static_cast<Py_ssize_t>(sizeof(int64_t));
  if (!valid_arguments(b, n)) return nullptr;
  const auto* chars = static_cast<const uint8_t*>(b.chars.buf);
  auto* out = static_cast<char*>(b.out.buf);
  Py_BEGIN_ALLOW_THREADS
  int64_t start = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const int64_t end = read_int64(b.ends, i);
    const RleCheck r = check_rle_string(chars + start, end - start, read_int64(b.pixels, i));
    const int64_t fields[kOutFields] = {r.problem, r.where, r.value, r.area, r.first,
                                        r.first_end, r.empty_runs};
    for (int field = 0; field < kOutFields; ++field) {
      std::memcpy(out + (field * n + i) * sizeof(int64_t), &fields[field], sizeof(int64_t));
    }
    start = end;
  }
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

}  // namespace ctvis
