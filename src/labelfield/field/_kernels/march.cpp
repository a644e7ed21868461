// Occupancy-culled ray marching with early stop and thinning on the CPU, C ABI for ctypes.
//
// Same samples as labelfield/render/sampling.py::march_rays with occupied_fn = OccupancyGrid.is_occupied,
// proxy_density_fn = OccupancyGrid.proxy_density and max_samples_per_ray (read its docstring): the block
// culling there (near_occupied_fn) only skips blocks without an occupied sample, and its wavefront rounds only
// skip steps behind an early stop, so walking every step of every ray in order gives the same samples.
//
// Per ray r (inputs from the Python side, float32): interval k in [0, n_steps) is
//   ts = max(t0 + k * step, t_lo), te = min(t0 + (k + 1) * step, t_hi), kept iff te > ts,
// its midpoint x = o + d * (0.5 * (ts + te)) lies in the box and in an occupied cell, and (early stop) the
// optical depth of the kept samples before it, sum of min(density[cell], cap) * (te - ts), is < threshold.
// A ray with c > K kept samples keeps every s-th (s = ceil(c / K)), widened to min(ts + s * step, t_hi).
//
// Two calls: offsets == nullptr counts the samples per ray into counts (n_rays,); then, with offsets (n_rays,)
// the exclusive prefix sum of the counts, the samples are written packed (ray-major, in t order). Rays are
// independent: OpenMP over rays, dynamic schedule (ray lengths differ). Float32 arithmetic in the same order
// as the PyTorch code (built with -ffp-contract=off), optical depth summed in double.

#include <cmath>
#include <cstdint>

namespace {

struct Params {
    const float* o;
    const float* d;
    const float* t0;
    const float* t_lo;
    const float* t_hi;
    const int64_t* n_steps;
    float step;
    float lo[3];
    float extent[3];  // aabb[1] - aabb[0]
    int32_t res;
    const uint8_t* binary;  // (res^3,) 0/1
    const float* density;   // (res^3,)
    float cap;              // proxy density cap
    double threshold;       // optical depth at which a ray stops
    int32_t early_stop;
    int64_t max_samples;    // K; 0 = no bound
};

// Calls emit(ts, te) for every kept sample of ray r, in t order; returns the count.
template <class Emit>
inline int64_t walk(const Params& p, int64_t r, Emit&& emit) {
    const float ox = p.o[3 * r], oy = p.o[3 * r + 1], oz = p.o[3 * r + 2];
    const float dx = p.d[3 * r], dy = p.d[3 * r + 1], dz = p.d[3 * r + 2];
    const float t0 = p.t0[r], tlo = p.t_lo[r], thi = p.t_hi[r];
    const int64_t n = p.n_steps[r];
    const float fres = static_cast<float>(p.res);
    const int64_t rmax = p.res - 1;
    double depth = 0.0;
    int64_t count = 0;
    for (int64_t k = 0; k < n; ++k) {
        const float kf = static_cast<float>(k);
        const float ts = std::fmax(t0 + kf * p.step, tlo);
        const float te = std::fmin(t0 + (kf + 1.0f) * p.step, thi);
        if (!(te > ts)) continue;
        const float mid = 0.5f * (ts + te);
        const float u0 = (ox + dx * mid - p.lo[0]) / p.extent[0];
        const float u1 = (oy + dy * mid - p.lo[1]) / p.extent[1];
        const float u2 = (oz + dz * mid - p.lo[2]) / p.extent[2];
        if (!(u0 >= 0.0f && u0 <= 1.0f && u1 >= 0.0f && u1 <= 1.0f && u2 >= 0.0f && u2 <= 1.0f)) continue;
        int64_t i = static_cast<int64_t>(u0 * fres), j = static_cast<int64_t>(u1 * fres),
                l = static_cast<int64_t>(u2 * fres);
        i = i < 0 ? 0 : (i > rmax ? rmax : i);
        j = j < 0 ? 0 : (j > rmax ? rmax : j);
        l = l < 0 ? 0 : (l > rmax ? rmax : l);
        const int64_t cell = (i * p.res + j) * p.res + l;
        if (!p.binary[cell]) continue;
        if (p.early_stop) {
            if (!(depth < p.threshold)) break;  // everything behind is dropped
            const float sigma = std::fmin(p.density[cell], p.cap);
            depth += static_cast<double>(sigma * (te - ts));
        }
        emit(ts, te);
        ++count;
    }
    return count;
}

}  // namespace

extern "C" int lf_march(int64_t n_rays, const float* o, const float* d, const float* t0, const float* t_lo,
                        const float* t_hi, const int64_t* n_steps, float step, const float* aabb, int32_t res,
                        const uint8_t* binary, const float* density, float cap, double threshold,
                        int32_t early_stop, int64_t max_samples, int64_t* counts, const int64_t* offsets,
                        float* ts_out, float* te_out, int64_t* ri_out, int32_t n_threads) {
    if (n_rays < 0 || res <= 0) return 1;
    Params p{o, d, t0, t_lo, t_hi, n_steps, step, {aabb[0], aabb[1], aabb[2]},
             {aabb[3] - aabb[0], aabb[4] - aabb[1], aabb[5] - aabb[2]}, res, binary, density, cap, threshold,
             early_stop, max_samples};
    if (n_threads < 1) n_threads = 1;
    if (offsets == nullptr) {
#pragma omp parallel for schedule(dynamic, 64) num_threads(n_threads)
        for (int64_t r = 0; r < n_rays; ++r) {
            int64_t c = walk(p, r, [](float, float) {});
            if (p.max_samples > 0 && c > p.max_samples) {
                const int64_t s = (c + p.max_samples - 1) / p.max_samples;
                c = (c + s - 1) / s;
            }
            counts[r] = c;
        }
        return 0;
    }
#pragma omp parallel for schedule(dynamic, 64) num_threads(n_threads)
    for (int64_t r = 0; r < n_rays; ++r) {
        // The count of the first call tells the stride: thinned count c' = ceil(c / s). Recount to get c.
        int64_t c = walk(p, r, [](float, float) {});
        int64_t s = 1;
        if (p.max_samples > 0 && c > p.max_samples) s = (c + p.max_samples - 1) / p.max_samples;
        const float sf = static_cast<float>(s);
        const float thi = p.t_hi[r];
        int64_t rank = 0, w = offsets[r];
        walk(p, r, [&](float ts, float te) {
            if (rank % s == 0) {
                ts_out[w] = ts;
                te_out[w] = s > 1 ? std::fmin(ts + sf * p.step, thi) : te;
                ri_out[w] = r;
                ++w;
            }
            ++rank;
        });
    }
    return 0;
}
