// Kernels of ms_deform_attn_cpu.cpp. Included twice there, inside namespaces ``generic`` and
// ``avx2`` (the latter compiled for AVX2 + FMA and chosen at run time where the CPU has them), so
// this file has no include guard and no includes of its own: it uses Level, Shapes, at:: and c10::
// from the including file.

// The four bilinear neighbours of one sampling point. A neighbour outside the map reads from a
// row of zeros, so the channel loops of the forward pass need no branches.
template <typename scalar_t>
struct Corners {
  const scalar_t* v[4];  // value rows: (y0, x0), (y0, x1), (y1, x0), (y1, x1)
  int64_t key[4];        // key index of each neighbour, -1 outside the map
  scalar_t fx, fy;       // fractional position inside the cell
};

// grid_sample's pixel coordinate for align_corners=False is loc * size - 0.5. Returns false when
// no neighbour lies inside the map (then the point contributes nothing, as with zero padding). At
// x = -1 exactly the right neighbour is inside with weight 0: no value, but a gradient.
template <typename scalar_t>
inline bool locate(scalar_t loc_x, scalar_t loc_y, const Level& level, const scalar_t* value_head,
                   int64_t key_stride, const scalar_t* zeros, Corners<scalar_t>* c) {
  const scalar_t x = loc_x * static_cast<scalar_t>(level.w) - scalar_t(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(level.h) - scalar_t(0.5);
  if (!(x >= scalar_t(-1) && y >= scalar_t(-1) && x < static_cast<scalar_t>(level.w) &&
        y < static_cast<scalar_t>(level.h))) {
    return false;  // also rejects NaN
  }
  const scalar_t x_floor = std::floor(x), y_floor = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(x_floor), y0 = static_cast<int64_t>(y_floor);
  c->fx = x - x_floor;
  c->fy = y - y_floor;
  for (const int corner : c10::irange(4)) {
    const int64_t cx = x0 + (corner & 1), cy = y0 + (corner >> 1);
    if (cx >= 0 && cy >= 0 && cx < level.w && cy < level.h) {
      c->key[corner] = level.start + cy * level.w + cx;
      c->v[corner] = value_head + c->key[corner] * key_stride;
    } else {
      c->key[corner] = -1;
      c->v[corner] = zeros;
    }
  }
  return true;
}

// One (batch, query, head) task of the forward pass: out (channels wide) = the sum over levels x
// points of weight * the bilinear sample of the head's value at the location. ``locations`` holds
// (x, y) per sample, ``weights`` one value per sample; ``zeros`` is a row of ``channels`` zeros.
template <typename scalar_t>
inline void sample_task(const scalar_t* value_head, const std::vector<Level>& levels,
                        const scalar_t* locations, const scalar_t* weights,
                        scalar_t* __restrict__ out, const scalar_t* zeros, const Shapes& s) {
  const int64_t ch = s.channels, key_stride = s.heads * ch;
  Corners<scalar_t> c;
  for (int64_t i = 0; i < ch; ++i) out[i] = scalar_t(0);
  for (int64_t l = 0; l < s.levels; ++l) {
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t i = l * s.points + p;
      if (!locate(locations[2 * i], locations[2 * i + 1], levels[l], value_head, key_stride, zeros,
                  &c)) {
        continue;
      }
      const scalar_t a = weights[i], gx = scalar_t(1) - c.fx, gy = scalar_t(1) - c.fy;
      const scalar_t w00 = a * gy * gx, w01 = a * gy * c.fx, w10 = a * c.fy * gx,
                     w11 = a * c.fy * c.fx;
      const scalar_t *__restrict__ v00 = c.v[0], *__restrict__ v01 = c.v[1],
                                   *__restrict__ v10 = c.v[2], *__restrict__ v11 = c.v[3];
#pragma omp simd
      for (int64_t k = 0; k < ch; ++k) {
        out[k] += w00 * v00[k] + w01 * v01[k] + w10 * v10[k] + w11 * v11[k];
      }
    }
  }
}

// Tasks per at::parallel_for chunk: about 4096 channel updates each.
inline int64_t forward_grain(const Shapes& s) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.levels * s.points * s.channels));
}

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const std::vector<Level>& levels,
                    const scalar_t* locations, const scalar_t* weights, scalar_t* output,
                    const Shapes& s) {
  const int64_t ch = s.channels, key_stride = s.heads * ch, samples = s.levels * s.points;
  at::parallel_for(0, s.batch * s.queries * s.heads, forward_grain(s), [&](int64_t begin,
                                                                           int64_t end) {
    const std::vector<scalar_t> zeros(ch, scalar_t(0));
    for (int64_t task = begin; task < end; ++task) {
      // task = (b * queries + q) * heads + h, the row-major index of output[b, q, h * ch]
      const int64_t b = task / (s.queries * s.heads), h = task % s.heads;
      sample_task(value + b * s.keys * key_stride + h * ch, levels,
                  locations + task * samples * 2, weights + task * samples, output + task * ch,
                  zeros.data(), s);
    }
  });
}

// The inference forward pass from the layer's raw predictions: per task, the attention weights
// are the softmax of its logits over levels x points (max-subtracted, as torch's softmax) and the
// locations are reference point + offset / (w, h) of the level (offsets count in pixels), both
// computed into per-thread buffers and sampled as by forward_kernel.
template <typename scalar_t>
void forward_from_offsets_kernel(const scalar_t* value, const std::vector<Level>& levels,
                                 const scalar_t* reference_points, const scalar_t* offsets,
                                 const scalar_t* logits, scalar_t* output, const Shapes& s) {
  const int64_t ch = s.channels, key_stride = s.heads * ch, samples = s.levels * s.points;
  at::parallel_for(0, s.batch * s.queries * s.heads, forward_grain(s), [&](int64_t begin,
                                                                           int64_t end) {
    const std::vector<scalar_t> zeros(ch, scalar_t(0));
    std::vector<scalar_t> locations(samples * 2), weights(samples);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.queries * s.heads), h = task % s.heads;
      const scalar_t* logit = logits + task * samples;
      scalar_t max_logit = logit[0];
      for (int64_t i = 1; i < samples; ++i) max_logit = std::max(max_logit, logit[i]);
      scalar_t sum = 0;
      for (int64_t i = 0; i < samples; ++i) {
        weights[i] = std::exp(logit[i] - max_logit);
        sum += weights[i];
      }
      const scalar_t inverse_sum = scalar_t(1) / sum;
      for (int64_t i = 0; i < samples; ++i) weights[i] *= inverse_sum;
      // reference_points[b, q] (levels x 2): task / heads = b * queries + q
      const scalar_t* point = reference_points + (task / s.heads) * s.levels * 2;
      const scalar_t* offset = offsets + task * samples * 2;
      for (int64_t l = 0; l < s.levels; ++l) {
        const scalar_t width = static_cast<scalar_t>(levels[l].w),
                       height = static_cast<scalar_t>(levels[l].h);
        for (int64_t i = l * s.points; i < (l + 1) * s.points; ++i) {
          locations[2 * i] = point[2 * l] + offset[2 * i] / width;
          locations[2 * i + 1] = point[2 * l + 1] + offset[2 * i + 1] / height;
        }
      }
      sample_task(value + b * s.keys * key_stride + h * ch, levels, locations.data(),
                  weights.data(), output + task * ch, zeros.data(), s);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_output, const scalar_t* value,
                     const std::vector<Level>& levels, const scalar_t* locations,
                     const scalar_t* weights, scalar_t* grad_value, scalar_t* grad_locations,
                     scalar_t* grad_weights, const Shapes& s) {
  const int64_t ch = s.channels, key_stride = s.heads * ch, samples = s.levels * s.points;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    const std::vector<scalar_t> zeros(ch, scalar_t(0));
    Corners<scalar_t> c;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / s.heads, h = bh % s.heads;
      const int64_t head_offset = b * s.keys * key_stride + h * ch;
      const scalar_t* value_head = value + head_offset;
      for (int64_t q = 0; q < s.queries; ++q) {
        const int64_t task = (b * s.queries + q) * s.heads + h;
        const scalar_t* __restrict__ go = grad_output + task * ch;
        const scalar_t* loc = locations + task * samples * 2;
        const scalar_t* attn = weights + task * samples;
        for (int64_t l = 0; l < s.levels; ++l) {
          const Level& level = levels[l];
          for (int64_t p = 0; p < s.points; ++p) {
            const int64_t i = l * s.points + p;
            scalar_t* grad_loc = grad_locations + (task * samples + i) * 2;
            if (!locate(loc[2 * i], loc[2 * i + 1], level, value_head, key_stride, zeros.data(),
                        &c)) {
              grad_loc[0] = grad_loc[1] = grad_weights[task * samples + i] = scalar_t(0);
              continue;
            }
            const scalar_t a = attn[i], fx = c.fx, fy = c.fy;
            const scalar_t gx = scalar_t(1) - fx, gy = scalar_t(1) - fy;
            const scalar_t w00 = gy * gx, w01 = gy * fx, w10 = fy * gx, w11 = fy * fx;
            const scalar_t *__restrict__ v00 = c.v[0], *__restrict__ v01 = c.v[1],
                                         *__restrict__ v10 = c.v[2], *__restrict__ v11 = c.v[3];
            const scalar_t coef[4] = {a * w00, a * w01, a * w10, a * w11};
            scalar_t d_attn = 0, d_x = 0, d_y = 0;
#pragma omp simd reduction(+ : d_attn, d_x, d_y)
            for (int64_t k = 0; k < ch; ++k) {
              const scalar_t g = go[k];
              d_attn += g * (w00 * v00[k] + w01 * v01[k] + w10 * v10[k] + w11 * v11[k]);
              d_x += g * (gy * (v01[k] - v00[k]) + fy * (v11[k] - v10[k]));
              d_y += g * (gx * (v10[k] - v00[k]) + fx * (v11[k] - v01[k]));
            }
            scalar_t* grad_head = grad_value + head_offset;
            if (c.key[0] >= 0 && c.key[3] >= 0) {  // all four neighbours inside: one pass
              scalar_t *__restrict__ g00 = grad_head + c.key[0] * key_stride,
                                     *__restrict__ g01 = grad_head + c.key[1] * key_stride,
                                     *__restrict__ g10 = grad_head + c.key[2] * key_stride,
                                     *__restrict__ g11 = grad_head + c.key[3] * key_stride;
#pragma omp simd
              for (int64_t k = 0; k < ch; ++k) {
                const scalar_t g = go[k];
                g00[k] += coef[0] * g;
                g01[k] += coef[1] * g;
                g10[k] += coef[2] * g;
                g11[k] += coef[3] * g;
              }
            } else {
              for (const int corner : c10::irange(4)) {
                if (c.key[corner] < 0) continue;
                scalar_t* __restrict__ row = grad_head + c.key[corner] * key_stride;
                for (int64_t k = 0; k < ch; ++k) row[k] += coef[corner] * go[k];
              }
            }
            grad_weights[task * samples + i] = d_attn;
            grad_loc[0] = a * static_cast<scalar_t>(level.w) * d_x;
            grad_loc[1] = a * static_cast<scalar_t>(level.h) * d_y;
          }
        }
      }
    }
  });
}
