// The exact check of pycocotools' compressed RLE counts strings (rle_check.cpp).
#pragma once

#include <Python.h>

#include <cstdint>

namespace ctvis {

// What is wrong with a string: the first problem met while decoding it, in this order of
// precedence at one character. The codes are mirrored in ctvis/ops/rle_check.py.
enum RleProblem : int64_t {
  kRleOk = 0,
  kRleEmpty = 1,             // no character at all
  kRleBadCharacter = 2,      // where: its offset, value: the character
  kRleTooManyChunks = 3,     // where: the run; an 8th 5-bit chunk (a uint32 needs at most 7)
  kRleTruncated = 4,         // where: the run; the string ends inside a number
  kRleWideNegative = 5,      // where: the run; a negative number of 7 chunks (see rle_check.cpp)
  kRleNegativeRun = 6,       // where: the run, value: its length
  kRleBeyondFrame = 7,       // where: the run, value: the runs up to it cover more than the frame
  kRleShort = 8,             // where: the number of runs, value: their total, below the frame
};

struct RleCheck {
  int64_t problem, where, value;
  int64_t area;       // sum of the odd runs (the foreground pixels)
  int64_t first;      // the first run length
  int64_t first_end;  // offset in the string after the first run length
  int64_t empty_runs;  // runs of length 0 after the first (pycocotools' IoU walk stops at one)
};

// Check one string against a frame of `pixels` pixels (height * width).
RleCheck check_rle_string(const uint8_t* chars, int64_t length, int64_t pixels);

// ctvis.ops._C.check_rle_runs(chars, ends, pixels, out): the Python binding (module.cpp).
PyObject* check_rle_strings(PyObject* self, PyObject* args);

}  // namespace ctvis
