// The Python module ctvis.ops._C. Importing it loads this library: the static initialisers of
// ms_deform_attn_cpu.cpp register torch.ops.ctvis.ms_deform_attn*, and the module has one plain
// function, check_rle_runs (ctvis::check_rle_strings, rle_check.cpp), which reads strings, not
// tensors.
#include <Python.h>

#include "rle_check.h"

namespace {

PyMethodDef methods[] = {
    {"check_rle_runs", ctvis::check_rle_strings, METH_VARARGS,
     "check_rle_runs(chars, ends, pixels, out): check compressed RLE counts strings.\n\n"
     "chars: the strings back to back (bytes-like, uint8); ends: int64 (n,) where each ends;\n"
     "pixels: int64 (n,) height * width of each frame; out: writable int64 (7, n), filled with\n"
     "problem, where, value, area, first run, offset after the first run, empty runs after the\n"
     "first (rle_check.h)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
