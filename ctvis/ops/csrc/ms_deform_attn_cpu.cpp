// Multi-scale deformable attention on the CPU: one fused pass per (batch, query, head).
//
// Semantics: those of mmcv's multi_scale_deformable_attn_pytorch, i.e. grid_sample with bilinear
// interpolation, zero padding and align_corners=False on every level, weighted by the attention
// weights and summed over levels and points. Layouts (all channel-last, contiguous):
//   value               (bs, num_keys, num_heads, channels)
//   spatial_shapes      (num_levels, 2) int64, (h, w) of each level
//   level_start_index   (num_levels,) int64, first key of each level
//   sampling_locations  (bs, num_queries, num_heads, num_levels, num_points, 2), (x, y) in [0, 1]
//   attention_weights   (bs, num_queries, num_heads, num_levels, num_points)
//   output              (bs, num_queries, num_heads * channels)
//
// ms_deform_attn_from_offsets (inference only, no backward) takes the layer's raw predictions
// instead of the last two and computes them per task, which saves two passes over tensors with a
// short last dimension (softmax; reference point + offset / level size):
//   reference_points    (bs, num_queries, num_levels, 2), (x, y) in [0, 1]
//   offsets             (bs, num_queries, num_heads, num_levels, num_points, 2), in pixels of
//                       each level: location = reference point + offset / (w, h)
//   logits              (bs, num_queries, num_heads, num_levels * num_points): attention weights
//                       = their softmax over levels and points
//
// The forward pass is parallel over (batch, query, head): each task reads its head's channels of
// at most four value rows per sampling point and accumulates straight into its output slice. The
// backward pass is parallel over (batch, head): the grad_value rows of one (batch, head) belong to
// one task only, so the scatter needs neither atomics nor per-thread copies, and the result does
// not depend on the number of threads.

#include <limits>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace ctvis {
namespace {

// Error messages are put together here rather than by TORCH_CHECK's stream formatting: with
// torch 2.11.0+cu130 and g++ 13.3, an extension's own `stream << int64_t` crashed the process
// (SIGSEGV in the stream's number formatting) where it should have raised, for any extension,
// not only this one; std::to_string does not go through streams.
template <typename T>
void append(std::string& out, const T& part) {
  if constexpr (std::is_integral_v<T>) {
    out += std::to_string(part);
  } else if constexpr (std::is_same_v<T, c10::ScalarType>) {
    out += c10::toString(part);
  } else if constexpr (std::is_same_v<T, c10::Device>) {
    out += part.str();
  } else if constexpr (std::is_same_v<T, c10::IntArrayRef>) {
    out += '[';
    for (const auto i : c10::irange(part.size())) {
      out += (i ? ", " : "") + std::to_string(part[i]);
    }
    out += ']';
  } else {
    out += part;
  }
}

template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out;
  (append(out, parts), ...);
  return out;
}

// TORCH_CHECK with the message made by message().
#define CTVIS_CHECK(cond, ...) TORCH_CHECK(cond, message(__VA_ARGS__))

struct Level {
  int64_t h, w, start;
};

struct Shapes {
  int64_t batch, keys, heads, channels, queries, levels, points;
};

std::vector<Level> read_levels(const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index) {
  const auto shapes = spatial_shapes.accessor<int64_t, 2>();
  const auto starts = level_start_index.accessor<int64_t, 1>();
  std::vector<Level> levels(spatial_shapes.size(0));
  for (const auto l : c10::irange(levels.size())) {
    levels[l] = Level{shapes[l][0], shapes[l][1], starts[l]};
  }
  return levels;
}

// An input with the name its errors give it.
struct Named {
  const char* name;
  const at::Tensor& tensor;
};

// Checks value, the level tables, and the device and dtype of the per-sample inputs; errors name
// the op, the argument and the mismatch. Returns the shapes with queries and points still 0.
Shapes check_value_and_levels(const char* op, const at::Tensor& value,
                              const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              std::initializer_list<Named> per_sample) {
  for (const auto* t : {&value, &spatial_shapes, &level_start_index}) {
    CTVIS_CHECK(t->device().is_cpu(), op, ": expects CPU tensors, got one on ", t->device());
  }
  CTVIS_CHECK(value.dim() == 4, op, ": value must be (bs, num_keys, num_heads, channels), got ",
              value.sizes());
  CTVIS_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble, op,
              ": value must be float32 or float64, got ", value.scalar_type());
  for (const Named& input : per_sample) {
    CTVIS_CHECK(input.tensor.device().is_cpu(), op, ": expects CPU tensors, got ", input.name,
                " on ", input.tensor.device());
    CTVIS_CHECK(input.tensor.scalar_type() == value.scalar_type(), op, ": ", input.name,
                " must have value's dtype ", value.scalar_type(), ", got ",
                input.tensor.scalar_type());
  }
  CTVIS_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 &&
                  spatial_shapes.scalar_type() == at::kLong,
              op, ": spatial_shapes must be an int64 (num_levels, 2) tensor, got ",
              spatial_shapes.scalar_type(), spatial_shapes.sizes());
  const int64_t levels = spatial_shapes.size(0);
  CTVIS_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels &&
                  level_start_index.scalar_type() == at::kLong,
              op, ": level_start_index must be an int64 (", levels, ",) tensor, got ",
              level_start_index.scalar_type(), level_start_index.sizes());
  int64_t expected_start = 0;
  const auto levels_read = read_levels(spatial_shapes.contiguous(),
                                       level_start_index.contiguous());
  for (const auto l : c10::irange(levels)) {
    const Level& level = levels_read[l];
    CTVIS_CHECK(level.h > 0 && level.w > 0, op, ": level ", l, " has an empty shape (", level.h,
                ", ", level.w, ")");
    CTVIS_CHECK(level.start == expected_start, op, ": level_start_index[", l, "] is ",
                level.start, " but the levels before it hold ", expected_start, " keys");
    // compared by division: a wrapped 64-bit sum of the levels' keys could equal value's
    // length, and the kernels would read outside value
    CTVIS_CHECK(level.w <= (std::numeric_limits<int64_t>::max() - expected_start) / level.h, op,
                ": level ", l, " (", level.h, ", ", level.w, ") holds more keys than int64 "
                "counts (after ", expected_start, " keys of the levels before it)");
    expected_start += level.h * level.w;
  }
  CTVIS_CHECK(expected_start == value.size(1), op, ": spatial_shapes hold ", expected_start,
              " keys but value has ", value.size(1));
  return Shapes{value.size(0), value.size(1), value.size(2), value.size(3), 0, levels, 0};
}

// Checks a (bs, num_queries, num_heads, num_levels, num_points, 2) input (sampling locations or
// offsets) and reads num_queries and num_points from it.
void read_sample_layout(const char* op, const Named& input, Shapes* s) {
  const at::Tensor& t = input.tensor;
  CTVIS_CHECK(t.dim() == 6 && t.size(0) == s->batch && t.size(2) == s->heads &&
                  t.size(3) == s->levels && t.size(5) == 2,
              op, ": ", input.name, " must be (bs=", s->batch, ", num_queries, num_heads=",
              s->heads, ", num_levels=", s->levels, ", num_points, 2), got ", t.sizes());
  s->queries = t.size(1);
  s->points = t.size(4);
}

// Checks every input of ms_deform_attn against the layouts above.
Shapes check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                    const at::Tensor& attention_weights) {
  const char* op = "ctvis::ms_deform_attn";
  const Named locations{"sampling_locations", sampling_locations},
      weights{"attention_weights", attention_weights};
  Shapes s = check_value_and_levels(op, value, spatial_shapes, level_start_index,
                                    {locations, weights});
  read_sample_layout(op, locations, &s);
  CTVIS_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5), op,
              ": attention_weights must be ", sampling_locations.sizes().slice(0, 5),
              " (sampling_locations without its last dimension), got ",
              attention_weights.sizes());
  return s;
}

// Checks every input of ms_deform_attn_from_offsets: reference_points (bs, num_queries,
// num_levels, 2), offsets (bs, num_queries, num_heads, num_levels, num_points, 2) and logits
// (bs, num_queries, num_heads, num_levels * num_points).
Shapes check_offset_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index,
                           const at::Tensor& reference_points, const at::Tensor& offsets,
                           const at::Tensor& logits) {
  const char* op = "ctvis::ms_deform_attn_from_offsets";
  const Named points{"reference_points", reference_points}, offsets_{"offsets", offsets},
      logits_{"logits", logits};
  Shapes s = check_value_and_levels(op, value, spatial_shapes, level_start_index,
                                    {points, offsets_, logits_});
  read_sample_layout(op, offsets_, &s);
  CTVIS_CHECK(reference_points.dim() == 4 && reference_points.size(0) == s.batch &&
                  reference_points.size(1) == s.queries &&
                  reference_points.size(2) == s.levels && reference_points.size(3) == 2,
              op, ": reference_points must be (", s.batch, ", ", s.queries, ", ", s.levels,
              ", 2) points (x, y), got ", reference_points.sizes());
  CTVIS_CHECK(logits.dim() == 4 && logits.size(0) == s.batch && logits.size(1) == s.queries &&
                  logits.size(2) == s.heads && logits.size(3) == s.levels * s.points,
              op, ": logits must be (", s.batch, ", ", s.queries, ", ", s.heads, ", ",
              s.levels * s.points, ") (num_levels * num_points per head), got ", logits.sizes());
  return s;
}

// The kernels twice: portable x86-64 (SSE2) code, and AVX2 + FMA code for the CPUs that have
// them (8 float lanes and fused multiply-adds).
namespace generic {
#include "ms_deform_attn_kernels.h"
}  // namespace generic

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__)
#define CTVIS_AVX2_KERNELS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "ms_deform_attn_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

// Whether to run the AVX2 kernels: the CPU has AVX2 and FMA and torch's own CPU capability
// (ATEN_CPU_CAPABILITY, torch.backends.cpu.get_cpu_capability()) is not DEFAULT.
bool use_avx2() {
#ifdef CTVIS_AVX2_KERNELS
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           at::get_cpu_capability() != "DEFAULT";
  return avx2;
#else
  return false;
#endif
}

// The kernel `name` for scalar_t (inside AT_DISPATCH): its AVX2 build where use_avx2(), else
// the generic one.
#ifdef CTVIS_AVX2_KERNELS
#define CTVIS_KERNEL(name) (use_avx2() ? &avx2::name<scalar_t> : &generic::name<scalar_t>)
#else
#define CTVIS_KERNEL(name) (&generic::name<scalar_t>)
#endif

at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index,
                                  const at::Tensor& sampling_locations,
                                  const at::Tensor& attention_weights) {
  const Shapes s = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                attention_weights);
  const auto levels = read_levels(spatial_shapes.contiguous(), level_start_index.contiguous());
  const at::Tensor v = value.contiguous(), loc = sampling_locations.contiguous(),
                   attn = attention_weights.contiguous();
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward", [&] {
    CTVIS_KERNEL(forward_kernel)(v.const_data_ptr<scalar_t>(), levels,
                                 loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
                                 output.mutable_data_ptr<scalar_t>(), s);
  });
  return output;
}

at::Tensor ms_deform_attn_from_offsets(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& reference_points,
                                       const at::Tensor& offsets, const at::Tensor& logits) {
  const Shapes s = check_offset_inputs(value, spatial_shapes, level_start_index,
                                       reference_points, offsets, logits);
  const auto levels = read_levels(spatial_shapes.contiguous(), level_start_index.contiguous());
  const at::Tensor v = value.contiguous(), points = reference_points.contiguous(),
                   offs = offsets.contiguous(), lgts = logits.contiguous();
  if (s.levels * s.points == 0) {  // no sample to weight: nothing is attended to
    return at::zeros({s.batch, s.queries, s.heads * s.channels}, value.options());
  }
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_from_offsets", [&] {
    CTVIS_KERNEL(forward_from_offsets_kernel)(
        v.const_data_ptr<scalar_t>(), levels, points.const_data_ptr<scalar_t>(),
        offs.const_data_ptr<scalar_t>(), lgts.const_data_ptr<scalar_t>(),
        output.mutable_data_ptr<scalar_t>(), s);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Shapes s = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                attention_weights);
  CTVIS_CHECK(grad_output.dim() == 3 && grad_output.size(0) == s.batch &&
                  grad_output.size(1) == s.queries &&
                  grad_output.size(2) == s.heads * s.channels &&
                  grad_output.scalar_type() == value.scalar_type(),
              "ctvis::ms_deform_attn_backward: grad_output must be ", value.scalar_type(), " (",
              s.batch, ", ", s.queries, ", ", s.heads * s.channels, "), got ",
              grad_output.scalar_type(), grad_output.sizes());
  const auto levels = read_levels(spatial_shapes.contiguous(), level_start_index.contiguous());
  const at::Tensor go = grad_output.contiguous(), v = value.contiguous(),
                   loc = sampling_locations.contiguous(), attn = attention_weights.contiguous();
  at::Tensor grad_value = at::zeros(v.sizes(), value.options());
  at::Tensor grad_locations = at::empty(loc.sizes(), value.options());
  at::Tensor grad_weights = at::empty(attn.sizes(), value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward", [&] {
    CTVIS_KERNEL(backward_kernel)(
        go.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), levels,
        loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<scalar_t>(), grad_locations.mutable_data_ptr<scalar_t>(),
        grad_weights.mutable_data_ptr<scalar_t>(), s);
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace

TORCH_LIBRARY(ctvis, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "ms_deform_attn_from_offsets(Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor reference_points, Tensor offsets, Tensor logits) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(ctvis, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward);
  m.impl("ms_deform_attn_from_offsets", &ms_deform_attn_from_offsets);
}

}  // namespace ctvis

// The Python module ctvis.ops._C itself is made in module.cpp: importing it loads this library,
// whose static initialisers above register the ops in torch.ops.ctvis.
