// Alpha compositing of packed samples on the CPU (forward, backward), the inference early-stop rounds and the
// per-ray label/confidence, C ABI for ctypes.
//
// Same maths as labelfield/render/composite.py (the reference; read its header for the tensor vocabulary):
// samples grouped by ray in increasing ray index, in t order within a ray. Per sample i of ray r:
//   tau_i = sigma_i * (te_i - ts_i), T_i = exp(-(tau_r0 + sum_{j<i} tau_j)), alpha_i = 1 - exp(-tau_i),
//   w_i = T_i * alpha_i; per ray: tau_r += sum tau_i, opacity_r += sum w_i, depth_r += sum w_i * tmid_i,
//   acc_r[:] += sum w_i * f_i[:], tmid_i = 0.5 * (ts_i + te_i).
// tau_r0 is the optical depth the ray already has (0 for a plain render, the earlier rounds' for the
// inference rounds), so calling the forward round after round in t order composites incrementally.
//
// Threads: the samples are cut into n_threads ranges whose bounds are moved forward to the next change of ray,
// so each ray belongs to one thread: no atomics, and the per-ray sums run in sample order whatever the thread
// count (deterministic). Optical depths are summed in double, as the reference's float64 cumsum.
//
// Backward (tau_r0 = 0): with c_i = dL/dw_i + dL/dopacity_r + dL/ddepth_r tmid_i + <f_i, dL/dacc_r>,
//   dL/dtau_k = c_k T_k exp(-tau_k) - sum_{i>k, same ray} c_i w_i + dL/dtau_r,  dL/dsigma_k = dL/dtau_k delta_k,
//   dL/df_k = w_k dL/dacc_r:
// a forward pass per ray stores T_k (in grad_sigma, as scratch), a reverse pass sums the suffix.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// First sample of each thread's range: t * n / nt moved forward to the next ray change. bounds has nt + 1 entries.
template <class RayOf>
void split_by_ray(int64_t n, int nt, RayOf&& ray_of, std::vector<int64_t>& bounds) {
    bounds.assign(nt + 1, n);
    bounds[0] = 0;
    for (int t = 1; t < nt; ++t) {
        int64_t b = std::max(bounds[t - 1], n * t / nt);
        while (b > 0 && b < n && ray_of(b) == ray_of(b - 1)) ++b;
        bounds[t] = b;
    }
}

// Rays must not decrease across the thread bounds either (within a range each thread checks).
template <class RayOf>
bool bounds_ordered(int64_t n, const std::vector<int64_t>& bounds, RayOf&& ray_of) {
    for (size_t t = 1; t + 1 < bounds.size(); ++t) {
        const int64_t b = bounds[t];
        if (b > 0 && b < n && ray_of(b) < ray_of(b - 1)) return false;
    }
    return true;
}

int threads_for(int64_t work, int32_t n_threads) {
#ifndef _OPENMP
    (void)work;
    (void)n_threads;
    return 1;  // built without OpenMP: the parallel regions run once, so one range must cover everything
#endif
    if (n_threads < 1) n_threads = 1;
    // below ~4k samples per thread the fork/join costs more than it saves
    const int64_t most = std::max<int64_t>(1, work / 4096);
    return static_cast<int>(std::min<int64_t>(n_threads, most));
}

// The per-thread sample ranges of a packed-sample pass: threads_for + split_by_ray, checked. Returns the thread
// count, or 0 when the rays decrease across a thread bound (the caller returns its "not grouped by ray" code).
template <class RayOf>
int ray_partition(int64_t n, int32_t n_threads, RayOf&& ray_of, std::vector<int64_t>& bounds) {
    const int nt = threads_for(n, n_threads);
    split_by_ray(n, nt, ray_of, bounds);
    return bounds_ordered(n, bounds, ray_of) ? nt : 0;
}

constexpr int kLanes = 16;  // rays per block in lf_labels (one 64-byte vector per class)
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t ivec __attribute__((vector_size(kLanes * sizeof(int32_t))));

// exp(x) for x <= 0 within ~2 ulp, per lane (Cephes' expf polynomial, 2^k from exponent bits; x is clamped at
// -87, where it gives 1.6e-38 instead of less). No calls, so it runs on whole vectors.
inline vec exp_neg(vec x) {
    const vec lo = x * 0.0f - 87.0f;
    x = x < lo ? lo : x;
    const vec magic = x * 0.0f + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
    const vec k = (x * 1.44269504088896341f + magic) - magic;
    const vec r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    vec p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const ivec bits = (__builtin_convertvector(k, ivec) + 127) << 23;
    vec scale;
    __builtin_memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

}  // namespace

extern "C" {

int lf_composite_abi_version() { return 1; }

// Forward. Sample k (k < n) is the packed sample p = sel ? sel[k] : k: ray_indices, t_starts, t_ends are read at
// p, sigma, feat (n, dim) and weights (n,) at k. Per-ray outputs are added to (tau is also read as tau_r0): pass
// zeros for a plain render. weights, opacity, depth, feat/acc may be null (not computed). Returns 0, 1 on bad
// arguments, 2 when the rays are not grouped in increasing order or out of range.
int lf_composite_forward(int64_t n, const int64_t* sel, const int64_t* ray_indices, const float* t_starts,
                         const float* t_ends, const float* sigma, const float* feat, int64_t dim, int64_t n_rays,
                         float* weights, float* tau, float* opacity, float* depth, float* acc, int32_t n_threads) {
    if (n < 0 || n_rays < 0 || dim < 0) return 1;
    if (n == 0) return 0;  // (empty tensors may come with null pointers)
    if (acc == nullptr) dim = 0;
    if (tau == nullptr || (dim > 0 && feat == nullptr)) return 1;
    auto pk = [sel](int64_t k) { return sel ? sel[k] : k; };
    auto ray_of = [&](int64_t k) { return ray_indices[pk(k)]; };
    std::vector<int64_t> bounds;
    const int nt = ray_partition(n, n_threads, ray_of, bounds);
    if (nt == 0) return 2;
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        const int64_t k1 = bounds[t + 1];
        std::vector<float> f_sum(dim);
        int64_t k = bounds[t];
        int64_t prev = -1;
        while (k < k1 && !bad) {
            const int64_t r = ray_of(k);
            if (r < 0 || r >= n_rays || r <= prev) {
                bad = 1;
                break;
            }
            prev = r;
            double excl = static_cast<double>(tau[r]);
            float o_sum = 0.0f, d_sum = 0.0f;
            std::fill(f_sum.begin(), f_sum.end(), 0.0f);
            for (; k < k1 && ray_of(k) == r; ++k) {
                const int64_t p = pk(k);
                const float ts = t_starts[p], te = t_ends[p];
                const float tk = sigma[k] * (te - ts);
                const float T = std::exp(-static_cast<float>(excl));
                const float w = T * (1.0f - std::exp(-tk));
                excl += static_cast<double>(tk);
                if (weights) weights[k] = w;
                o_sum += w;
                d_sum += w * (0.5f * (ts + te));
                const float* f = feat + k * dim;
                for (int64_t c = 0; c < dim; ++c) f_sum[c] += w * f[c];
            }
            tau[r] = static_cast<float>(excl);
            if (opacity) opacity[r] += o_sum;
            if (depth) depth[r] += d_sum;
            for (int64_t c = 0; c < dim; ++c) acc[r * dim + c] += f_sum[c];
        }
    }
    return bad ? 2 : 0;
}

// Backward of the forward with sel = null and tau_r0 = 0. Gradients in: grad_weights (n,), grad_tau,
// grad_opacity, grad_depth (n_rays,), grad_acc (n_rays, dim), each may be null (zero). Out: grad_sigma (n,),
// grad_feat (n, dim) (may be null), written entirely. Same return codes as the forward.
int lf_composite_backward(int64_t n, const int64_t* ray_indices, const float* t_starts, const float* t_ends,
                          const float* sigma, const float* feat, int64_t dim, int64_t n_rays,
                          const float* grad_weights, const float* grad_tau, const float* grad_opacity,
                          const float* grad_depth, const float* grad_acc, float* grad_sigma, float* grad_feat,
                          int32_t n_threads) {
    if (n < 0 || n_rays < 0 || dim < 0) return 1;
    if (n == 0) return 0;
    if (grad_sigma == nullptr || (dim > 0 && feat == nullptr)) return 1;
    auto ray_of = [&](int64_t k) { return ray_indices[k]; };
    std::vector<int64_t> bounds;
    const int nt = ray_partition(n, n_threads, ray_of, bounds);
    if (nt == 0) return 2;
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        const int64_t k1 = bounds[t + 1];
        int64_t k = bounds[t];
        int64_t prev = -1;
        while (k < k1 && !bad) {
            const int64_t r = ray_indices[k];
            if (r < 0 || r >= n_rays || r <= prev) {
                bad = 1;
                break;
            }
            prev = r;
            const int64_t a = k;
            double excl = 0.0;
            for (; k < k1 && ray_indices[k] == r; ++k) {  // T_k into grad_sigma (scratch)
                grad_sigma[k] = std::exp(-static_cast<float>(excl));
                excl += static_cast<double>(sigma[k] * (t_ends[k] - t_starts[k]));
            }
            const float go = grad_opacity ? grad_opacity[r] : 0.0f;
            const float gd = grad_depth ? grad_depth[r] : 0.0f;
            const float gt = grad_tau ? grad_tau[r] : 0.0f;
            const float* ga = (grad_acc && dim) ? grad_acc + r * dim : nullptr;
            double suffix = 0.0;  // sum_{i>k} c_i w_i
            for (int64_t i = k - 1; i >= a; --i) {
                const float ts = t_starts[i], te = t_ends[i], delta = te - ts;
                const float tk = sigma[i] * delta;
                const float T = grad_sigma[i];
                const float e = std::exp(-tk);
                const float w = T * (1.0f - e);
                float c = go + gd * (0.5f * (ts + te));
                if (grad_weights) c += grad_weights[i];
                if (ga) {
                    const float* f = feat + i * dim;
                    for (int64_t j = 0; j < dim; ++j) c += f[j] * ga[j];
                }
                if (grad_feat && dim) {
                    float* gf = grad_feat + i * dim;
                    for (int64_t j = 0; j < dim; ++j) gf[j] = ga ? w * ga[j] : 0.0f;
                }
                const float g_tau = c * T * e - static_cast<float>(suffix) + gt;
                grad_sigma[i] = g_tau * delta;
                suffix += static_cast<double>(c * w);
            }
        }
    }
    return bad ? 2 : 0;
}

// One inference round: for every ray r with counts[r] > lo and (round == first or tau[r] < threshold), its samples
// of rank [lo, min(hi, counts[r])) (packed index starts[r] + rank) go to sel (in packed order), with their
// normalised midpoints x_out = clamp((o + d * tmid - box_lo) / box_extent, 0, 1) (k, 3). sel and x_out hold
// at least that many entries (<= n_rays * (hi - lo)). Returns the number selected, or -1 on bad arguments.
int64_t lf_round_select(int64_t n_rays, const int64_t* starts, const int64_t* counts, const float* tau, int64_t lo,
                        int64_t hi, float threshold, int32_t check_tau, const float* rays_o, const float* rays_d,
                        const float* t_starts, const float* t_ends, const float* box, int64_t* sel, float* x_out,
                        int64_t* first, int32_t n_threads) {
    // first (n_rays + 1,) scratch: offset of each ray's first selected sample
    if (n_rays < 0 || lo < 0 || hi < lo) return -1;
    int64_t total = 0;
    for (int64_t r = 0; r < n_rays; ++r) {
        first[r] = total;
        int64_t m = std::min(counts[r], hi) - lo;
        if (m <= 0 || (check_tau && !(tau[r] < threshold))) m = 0;
        total += m;
    }
    first[n_rays] = total;
    const float lo0 = box[0], lo1 = box[1], lo2 = box[2];
    const float e0 = box[3] - box[0], e1 = box[4] - box[1], e2 = box[5] - box[2];
    const int nt = threads_for(total, n_threads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < n_rays; ++r) {
        const int64_t m = first[r + 1] - first[r];
        if (m == 0) continue;
        const float ox = rays_o[3 * r], oy = rays_o[3 * r + 1], oz = rays_o[3 * r + 2];
        const float dx = rays_d[3 * r], dy = rays_d[3 * r + 1], dz = rays_d[3 * r + 2];
        for (int64_t j = 0; j < m; ++j) {
            const int64_t p = starts[r] + lo + j, w = first[r] + j;
            sel[w] = p;
            const float tm = 0.5f * (t_starts[p] + t_ends[p]);
            const float u0 = (ox + dx * tm - lo0) / e0, u1 = (oy + dy * tm - lo1) / e1, u2 = (oz + dz * tm - lo2) / e2;
            x_out[3 * w] = std::fmin(std::fmax(u0, 0.0f), 1.0f);
            x_out[3 * w + 1] = std::fmin(std::fmax(u1, 0.0f), 1.0f);
            x_out[3 * w + 2] = std::fmin(std::fmax(u2, 0.0f), 1.0f);
        }
    }
    return total;
}

// Per-ray label and confidence from the composited semantic features, as models/ngp.py then
// models/base.py::semantic_outputs then max. Logits z (C,) per ray: with a linear head (weight (C, D) and bias
// (C,) not null) z = weight @ acc_r + opacity_r * bias (NGPModel's per-ray head), else z = acc_r (D == C).
// p = softmax(z), and with a background class b (b >= 0) p = o softmax(z) + (1 - o) onehot(b) with
// o = 1 - exp(-tau) (semantic_outputs does this in log space). label = first argmax, confidence = max p.
// log_probs (n, C), when not null, as semantic_outputs computes them (log space, scalar code).
// Blocks of 16 rays, one lane per ray: the head, the max, the exponentials and the argmax run on vectors.
// Returns 0, or 1 on bad arguments.
int lf_labels(int64_t n, int64_t dim, int64_t n_classes, const float* acc, const float* weight, const float* bias,
              const float* opacity, const float* tau, int64_t background, int64_t* label, float* confidence,
              float* log_probs, int32_t n_threads) {
    if (n < 0 || n_classes < 1 || dim < 1 || background >= n_classes || n_classes > 65536) return 1;
    if (n == 0) return 0;
    const bool head = weight != nullptr;
    if ((!head && dim != n_classes) || (head && (bias == nullptr || opacity == nullptr))) return 1;
    if (background >= 0 && tau == nullptr) return 1;
    const int64_t n_blocks = (n + kLanes - 1) / kLanes;
    const int nt = threads_for(n * n_classes / 8, n_threads);
#pragma omp parallel num_threads(nt)
    {
        std::vector<vec> a(dim), z(n_classes);
        float tmp[kLanes];
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            const int64_t r0 = blk * kLanes;
            const int m_rows = static_cast<int>(std::min<int64_t>(kLanes, n - r0));
            auto load = [&](const float* src, int64_t stride, int64_t col) {  // lanes past n: 0
                for (int i = 0; i < kLanes; ++i) tmp[i] = i < m_rows ? src[(r0 + i) * stride + col] : 0.0f;
                vec v;
                __builtin_memcpy(&v, tmp, sizeof(v));
                return v;
            };
            for (int64_t d = 0; d < dim; ++d) a[d] = load(acc, dim, d);
            if (head) {
                const vec o = load(opacity, 1, 0);
                for (int64_t c = 0; c < n_classes; ++c) {
                    vec zc = o * bias[c];
                    const float* w = weight + c * dim;
                    for (int64_t d = 0; d < dim; ++d) zc += a[d] * w[d];
                    z[c] = zc;
                }
            } else {
                for (int64_t c = 0; c < n_classes; ++c) z[c] = a[c];
            }
            // max over all classes (for the softmax) and first argmax over the classes other than b
            vec m = z[0];
            for (int64_t c = 1; c < n_classes; ++c) m = z[c] > m ? z[c] : m;
            vec s = m * 0.0f, best = m * 0.0f - 3.0e38f;
            ivec arg = __builtin_convertvector(m * 0.0f, ivec);
            for (int64_t c = 0; c < n_classes; ++c) {
                s += exp_neg(z[c] - m);
                if (c == background) continue;
                const ivec gt = z[c] > best;
                best = gt ? z[c] : best;
                arg = gt ? static_cast<int32_t>(c) : arg;
            }
            vec conf = exp_neg(best - m) / s;  // softmax probability of the best class other than b
            if (background >= 0) {
                const vec t = load(tau, 1, 0);
                const vec keep = exp_neg(-t);  // 1 - o: transmittance left for the background
                const vec o = 1.0f - keep;
                const vec p_b = exp_neg(z[background] - m) / s * o + keep;
                const vec p_best = conf * o;
                // first argmax: b wins a tie when it comes first
                const int32_t b32 = static_cast<int32_t>(background);
                const ivec take_b = (p_b > p_best) | ((p_b == p_best) & (arg > b32));
                conf = take_b ? p_b : p_best;
                arg = take_b ? static_cast<int32_t>(background) : arg;
            }
            __builtin_memcpy(tmp, &conf, sizeof(tmp));
            for (int i = 0; i < m_rows; ++i) confidence[r0 + i] = tmp[i];
            int32_t ia[kLanes];
            __builtin_memcpy(ia, &arg, sizeof(ia));
            for (int i = 0; i < m_rows; ++i) label[r0 + i] = ia[i];
            if (log_probs) {
                float zs[kLanes];
                for (int i = 0; i < m_rows; ++i) {
                    float* lp = log_probs + (r0 + i) * n_classes;
                    for (int64_t c = 0; c < n_classes; ++c) {
                        __builtin_memcpy(zs, &z[c], sizeof(zs));
                        lp[c] = zs[i];
                    }
                    float mx = lp[0];
                    for (int64_t c = 1; c < n_classes; ++c) mx = std::fmax(mx, lp[c]);
                    float sum = 0.0f;
                    for (int64_t c = 0; c < n_classes; ++c) sum += std::exp(lp[c] - mx);
                    float shift = -(mx + std::log(sum));
                    const float tr = background >= 0 ? tau[r0 + i] : 0.0f;
                    if (background >= 0) shift += std::log(std::fmax(-std::expm1(-tr), 1e-12f));
                    for (int64_t c = 0; c < n_classes; ++c) lp[c] += shift;
                    if (background >= 0) {
                        const float x = lp[background], y = -tr;
                        lp[background] = std::fmax(x, y) + std::log1p(std::exp(-std::fabs(x - y)));
                    }
                }
            }
        }
    }
    return 0;
}

}  // extern "C"
