// Multiresolution hash encoding on the CPU: forward, table gradient and position gradient, C ABI for ctypes.
//
// Same maths as labelfield/field/hashgrid_ref.py (the definition; read its header): x in [0,1]^3 (clamped),
// p = x * N_l, cell = clamp(floor(p), 0, N_l - 1), frac = p - cell, 8 corners (bit 0 = +x, bit 1 = +y,
// bit 2 = +z), weight (wx * wy) * wz, dense index i + j (N+1) + k (N+1)^2 when the level is dense
// ((N+1)^3 <= S_l), else (i ^ j * 2654435761 ^ k * 805459861) mod 2^32 & (S_l - 1).
//
// Layout: x (n, 3) float32; table (rows, F) float32, level l at rows [offsets[l], offsets[l] + sizes[l]);
// out / grad_out element (point i, level l, feature f) at i * stride_n + l * stride_l + f.
//
// Speed: points go in chunks of 2^16; within a chunk the forward loops level by level (outer) so one level's
// table stays in cache while the chunk's points visit it, with OpenMP over blocks of points; in each block it
// first computes the 8 corner rows and prefetches them, then gathers. The backward gives each thread whole
// levels (per chunk): no atomics and a fixed summation order, so the gradient is deterministic whatever the
// thread count. Chunking bounds the output rows streamed per level pass (measured ~5-25% faster at 2^18 points
// than whole-batch level passes, identical at <= 2^16).
//
// Position gradient (lf_hashgrid_backward_x, only called when x needs one: camera pose refinement): per point,
// d out / d x_a = N_l * sum_k (d w_k / d frac_a) tab[idx_k], zero on an axis where x_a lies outside [0, 1] (clamped,
// as torch.clamp's gradient). Each point's row has one writer per level pass (levels in order, a barrier after
// each), so there are no atomics and the sum order (levels, corners) does not depend on the threads.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int kBlock = 32;       // points whose corners are computed (and prefetched) before gathering
constexpr int64_t kChunk = 65536;  // points per pass over the levels: bounds the output / grad_out rows in flight

struct Level {
    float fres;       // N_l as float
    float max_cell;   // N_l - 1
    uint32_t stride;  // N_l + 1 (dense indexing)
    uint32_t mask;    // S_l - 1 (hashed indexing, S_l a power of two)
    bool hashed;
};

inline Level make_level(int32_t res, int64_t size) {
    Level g;
    g.fres = static_cast<float>(res);
    g.max_cell = static_cast<float>(res - 1);
    g.stride = static_cast<uint32_t>(res) + 1u;
    g.mask = static_cast<uint32_t>(size - 1);
    const int64_t n_vertices = static_cast<int64_t>(res + 1) * (res + 1) * (res + 1);
    g.hashed = n_vertices > size;
    return g;
}

// Rows (within the level) and trilinear weights of the 8 corners of point xi.
inline void corners(const float* xi, const Level& g, uint32_t idx[8], float w[8]) {
    uint32_t c[3];
    float fr[3];
    for (int a = 0; a < 3; ++a) {
        float xa = xi[a];
        xa = xa < 0.0f ? 0.0f : (xa > 1.0f ? 1.0f : xa);
        const float p = xa * g.fres;
        float cell = std::floor(p);
        cell = cell > g.max_cell ? g.max_cell : cell;
        c[a] = static_cast<uint32_t>(cell);
        fr[a] = p - cell;
    }
    const float wx[2] = {1.0f - fr[0], fr[0]};
    const float wy[2] = {1.0f - fr[1], fr[1]};
    const float wz[2] = {1.0f - fr[2], fr[2]};
    for (int k = 0; k < 8; ++k) {
        const uint32_t vx = c[0] + (k & 1), vy = c[1] + ((k >> 1) & 1), vz = c[2] + ((k >> 2) & 1);
        if (g.hashed) {
            idx[k] = (vx ^ (vy * kPrime1) ^ (vz * kPrime2)) & g.mask;
        } else {
            idx[k] = vx + vy * g.stride + vz * g.stride * g.stride;
        }
        w[k] = (wx[k & 1] * wy[(k >> 1) & 1]) * wz[(k >> 2) & 1];
    }
}

// Corner rows and weights of points [b0, b0 + bn) at one level, prefetching those rows of `rows` (the table for
// the forward, RW = 0; its gradient for the backward, RW = 1) before the gather/scatter that follows.
template <int RW>
inline void block_corners(const float* x, int64_t b0, int bn, const Level& g, const float* rows, int F,
                          uint32_t (*idx)[8], float (*w)[8]) {
    for (int i = 0; i < bn; ++i) {
        corners(x + 3 * (b0 + i), g, idx[i], w[i]);
        for (int k = 0; k < 8; ++k) __builtin_prefetch(rows + static_cast<size_t>(idx[i][k]) * F, RW, 1);
    }
}

// Forward of points [b0, b0 + bn) (bn <= kBlock) at one level: corners and prefetch first, then gather.
template <int FC>
inline void forward_block(const float* x, int64_t b0, int bn, const float* tab, const Level& g, int nf, float* out,
                          int64_t stride_n) {
    const int F = FC > 0 ? FC : nf;
    uint32_t idx[kBlock][8];
    float w[kBlock][8];
    block_corners<0>(x, b0, bn, g, tab, F, idx, w);
    for (int i = 0; i < bn; ++i) {
        float* o = out + (b0 + i) * stride_n;
        for (int f = 0; f < F; ++f) {
            float acc = tab[static_cast<size_t>(idx[i][0]) * F + f] * w[i][0];
            for (int k = 1; k < 8; ++k) acc += tab[static_cast<size_t>(idx[i][k]) * F + f] * w[i][k];
            o[f] = acc;
        }
    }
}

// Table gradient of points [b0, b0 + bn) at one level, accumulated into that level's rows gtab.
template <int FC>
inline void backward_block(const float* x, int64_t b0, int bn, const float* grad, const Level& g, int nf, float* gtab,
                           int64_t stride_n) {
    const int F = FC > 0 ? FC : nf;
    uint32_t idx[kBlock][8];
    float w[kBlock][8];
    block_corners<1>(x, b0, bn, g, gtab, F, idx, w);
    for (int i = 0; i < bn; ++i) {
        const float* go = grad + (b0 + i) * stride_n;
        for (int k = 0; k < 8; ++k) {
            float* row = gtab + static_cast<size_t>(idx[i][k]) * F;
            for (int f = 0; f < F; ++f) row[f] += w[i][k] * go[f];
        }
    }
}

// Position gradient of points [b0, b0 + bn) (bn <= kBlock) at one level, added to their rows of gx (n, 3). As
// the forward: corner rows of the whole block first (prefetched), then the gathers.
template <int FC>
inline void backward_x_block(const float* x, int64_t b0, int bn, const float* grad, const float* tab, const Level& g,
                             int nf, float* gx, int64_t stride_n) {
    const int F = FC > 0 ? FC : nf;
    uint32_t idx[kBlock][8];
    float fr[kBlock][3], scale[kBlock][3];
    for (int i = 0; i < bn; ++i) {
        const float* xi = x + 3 * (b0 + i);
        uint32_t c[3];
        for (int a = 0; a < 3; ++a) {
            const float xr = xi[a];
            scale[i][a] = (xr < 0.0f || xr > 1.0f) ? 0.0f : g.fres;  // clamped: no gradient
            const float xa = xr < 0.0f ? 0.0f : (xr > 1.0f ? 1.0f : xr);
            const float p = xa * g.fres;
            float cell = std::floor(p);
            cell = cell > g.max_cell ? g.max_cell : cell;
            c[a] = static_cast<uint32_t>(cell);
            fr[i][a] = p - cell;
        }
        for (int k = 0; k < 8; ++k) {
            const uint32_t vx = c[0] + (k & 1), vy = c[1] + ((k >> 1) & 1), vz = c[2] + ((k >> 2) & 1);
            idx[i][k] = g.hashed ? ((vx ^ (vy * kPrime1) ^ (vz * kPrime2)) & g.mask)
                                 : (vx + vy * g.stride + vz * g.stride * g.stride);
            __builtin_prefetch(tab + static_cast<size_t>(idx[i][k]) * F, 0, 1);
        }
    }
    for (int i = 0; i < bn; ++i) {
        const float* go = grad + (b0 + i) * stride_n;
        const float wx[2] = {1.0f - fr[i][0], fr[i][0]};
        const float wy[2] = {1.0f - fr[i][1], fr[i][1]};
        const float wz[2] = {1.0f - fr[i][2], fr[i][2]};
        float d[3] = {0.0f, 0.0f, 0.0f};
        for (int k = 0; k < 8; ++k) {
            const int bx = k & 1, by = (k >> 1) & 1, bz = (k >> 2) & 1;
            const float* row = tab + static_cast<size_t>(idx[i][k]) * F;
            float dot = 0.0f;  // sum_f tab[idx, f] * grad_out[f]
            for (int f = 0; f < F; ++f) dot += row[f] * go[f];
            // d w_k / d frac_a: the other two axes' factors, signed by the corner's side on axis a.
            d[0] += (bx ? 1.0f : -1.0f) * (wy[by] * wz[bz]) * dot;
            d[1] += (by ? 1.0f : -1.0f) * (wx[bx] * wz[bz]) * dot;
            d[2] += (bz ? 1.0f : -1.0f) * (wx[bx] * wy[by]) * dot;
        }
        float* o = gx + 3 * (b0 + i);
        for (int a = 0; a < 3; ++a) o[a] += scale[i][a] * d[a];
    }
}

template <typename Fn>
void dispatch_features(int nf, Fn&& fn) {
    switch (nf) {
        case 1: fn(std::integral_constant<int, 1>{}); break;
        case 2: fn(std::integral_constant<int, 2>{}); break;
        case 4: fn(std::integral_constant<int, 4>{}); break;
        case 8: fn(std::integral_constant<int, 8>{}); break;
        default: fn(std::integral_constant<int, 0>{}); break;
    }
}

// Ask for transparent huge pages on a large, not yet touched output buffer: torch hands us fresh mmap'ed memory
// every call (tens of MB), and faulting it in 4 KiB pages cost as much as the encoding itself. No-op elsewhere.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t kHuge = uintptr_t(1) << 21;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

bool bad_args(int64_t n, int32_t n_levels, int32_t nf, const int32_t* res, const int64_t* sizes) {
    if (n < 0 || n_levels < 1 || nf < 1) return true;
    for (int l = 0; l < n_levels; ++l) {
        if (res[l] < 1 || sizes[l] < 1) return true;
    }
    return false;
}

}  // namespace

extern "C" {

int lf_hashgrid_abi_version() { return 2; }

// out[i * stride_n + l * stride_l + f] = encoding of point i. Returns 0, or 1 on bad arguments.
int lf_hashgrid_forward(const float* x, int64_t n, const float* table, const int32_t* res, const int64_t* offsets,
                        const int64_t* sizes, int32_t n_levels, int32_t nf, float* out, int64_t stride_n,
                        int64_t stride_l, int32_t n_threads) {
    if (bad_args(n, n_levels, nf, res, sizes)) return 1;
    if (n_threads < 1) n_threads = 1;
    if (stride_n == static_cast<int64_t>(n_levels) * nf && stride_l == nf) {
        advise_huge_pages(out, static_cast<size_t>(n) * stride_n * sizeof(float));
    }
    std::vector<Level> levels(n_levels);
    for (int l = 0; l < n_levels; ++l) levels[l] = make_level(res[l], sizes[l]);
    // Chunks of kChunk points, levels in order within a chunk, blocks of points shared dynamically by the threads
    // (a thread slowed by a busy machine does not hold the others back). No barriers (nowait): every (point,
    // level) output has exactly one writer.
#pragma omp parallel num_threads(n_threads)
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t c1 = std::min(n, c0 + kChunk);
        for (int l = 0; l < n_levels; ++l) {
            const float* tab = table + static_cast<size_t>(offsets[l]) * nf;
            float* o = out + static_cast<int64_t>(l) * stride_l;
            dispatch_features(nf, [&](auto fc) {
#pragma omp for schedule(dynamic, 16) nowait
                for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
                    const int bn = static_cast<int>(std::min<int64_t>(kBlock, c1 - b0));
                    forward_block<decltype(fc)::value>(x, b0, bn, tab, levels[l], nf, o, stride_n);
                }
            });
        }
    }
    return 0;
}

// grad_table (rows, F), written entirely (no need to zero it) = (d out / d table)^T grad_out, same strides as the
// forward.
int lf_hashgrid_backward(const float* x, int64_t n, const float* grad_out, const int32_t* res,
                         const int64_t* offsets, const int64_t* sizes, int32_t n_levels, int32_t nf,
                         float* grad_table, int64_t stride_n, int64_t stride_l, int32_t n_threads) {
    if (bad_args(n, n_levels, nf, res, sizes)) return 1;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > n_levels) n_threads = n_levels;  // parallel over levels
    const size_t rows = static_cast<size_t>(offsets[n_levels - 1] + sizes[n_levels - 1]);
    advise_huge_pages(grad_table, rows * nf * sizeof(float));
    std::vector<Level> levels(n_levels);
    for (int l = 0; l < n_levels; ++l) levels[l] = make_level(res[l], sizes[l]);
    const int64_t n_chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);  // one (empty) chunk zeroes when n = 0
    // Chunks of kChunk points (their grad_out rows stay in cache while every level reads its column); within a
    // chunk each level has one owner thread (dynamic), so there are no atomics and the summation order (chunks,
    // points, corners in order) does not depend on the threads. Each level's rows are zeroed in the first chunk.
#pragma omp parallel num_threads(n_threads)
    for (int64_t ci = 0; ci < n_chunks; ++ci) {
        const int64_t c0 = ci * kChunk, c1 = std::min(n, c0 + kChunk);
#pragma omp for schedule(dynamic, 1)
        for (int l = 0; l < n_levels; ++l) {
            float* gt = grad_table + static_cast<size_t>(offsets[l]) * nf;
            if (c0 == 0) std::fill(gt, gt + static_cast<size_t>(sizes[l]) * nf, 0.0f);
            const float* go = grad_out + static_cast<int64_t>(l) * stride_l;
            dispatch_features(nf, [&](auto fc) {
                for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
                    const int bn = static_cast<int>(std::min<int64_t>(kBlock, c1 - b0));
                    backward_block<decltype(fc)::value>(x, b0, bn, go, levels[l], nf, gt, stride_n);
                }
            });
        }
    }
    return 0;
}

// grad_x (n, 3), written entirely = (d out / d x)^T grad_out (same strides as the forward; table as there).
int lf_hashgrid_backward_x(const float* x, int64_t n, const float* grad_out, const float* table, const int32_t* res,
                           const int64_t* offsets, const int64_t* sizes, int32_t n_levels, int32_t nf, float* grad_x,
                           int64_t stride_n, int64_t stride_l, int32_t n_threads) {
    if (bad_args(n, n_levels, nf, res, sizes)) return 1;
    if (n_threads < 1) n_threads = 1;
    std::vector<Level> levels(n_levels);
    for (int l = 0; l < n_levels; ++l) levels[l] = make_level(res[l], sizes[l]);
    std::fill(grad_x, grad_x + 3 * n, 0.0f);
    // As the forward (chunks, levels in order, blocks of points shared by the threads), but with a barrier after
    // each level: a point's row is then updated by one thread at a time, levels in order.
#pragma omp parallel num_threads(n_threads)
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t c1 = std::min(n, c0 + kChunk);
        for (int l = 0; l < n_levels; ++l) {
            const float* tab = table + static_cast<size_t>(offsets[l]) * nf;
            const float* go = grad_out + static_cast<int64_t>(l) * stride_l;
            dispatch_features(nf, [&](auto fc) {
#pragma omp for schedule(dynamic, 16)
                for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
                    const int bn = static_cast<int>(std::min<int64_t>(kBlock, c1 - b0));
                    backward_x_block<decltype(fc)::value>(x, b0, bn, go, tab, levels[l], nf, grad_x, stride_n);
                }
            });
        }
    }
    return 0;
}

}  // extern "C"
