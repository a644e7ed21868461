// Inference of a small Linear-ReLU MLP (no autograd) on the CPU, C ABI for ctypes.
//
// y = W_L (... relu(W_1 x + b_1) ...) + b_L for rows x of in (n, d_0) row-major; W_l (d_l, d_{l-1}) row-major
// (nn.Linear's layout), b_l (d_l,). Optional density-head epilogue (models' DensityHead): out row (raw) ->
// sigma = exp(raw_0 - 1) (n,), g = raw_1.. (n, d_L - 1).
//
// Why: the density MLP of the annotate path has thin layers (32 -> 64 -> 16) over ~10^6 samples; through
// torch it writes every activation to memory and back, with a separate ReLU pass (~20 GFLOP per CPU-second
// measured). Here blocks of 16 samples go through all layers in registers/L1: activations are kept transposed
// ([unit][16 samples], one 64-byte vector per unit), and 8 output units are accumulated at once (8 independent
// vector FMA chains, the weights broadcast). OpenMP over blocks.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kB = 16;  // samples per block (one vector of 16 floats per unit)
typedef float vec __attribute__((vector_size(kB * sizeof(float))));

// out[j] = act(sum_k W[j, k] in[k] + b[j]) for j < dout; in/out hold one vec per unit.
inline void layer(const float* W, const float* b, int din, int dout, const vec* in, vec* out, bool relu) {
    const vec zero = {};
    int j = 0;
    for (; j + 8 <= dout; j += 8) {
        vec a0 = zero + b[j], a1 = zero + b[j + 1], a2 = zero + b[j + 2], a3 = zero + b[j + 3];
        vec a4 = zero + b[j + 4], a5 = zero + b[j + 5], a6 = zero + b[j + 6], a7 = zero + b[j + 7];
        const float* w = W + static_cast<int64_t>(j) * din;
        for (int k = 0; k < din; ++k) {
            const vec x = in[k];
            a0 += x * w[k];
            a1 += x * w[din + k];
            a2 += x * w[2 * din + k];
            a3 += x * w[3 * din + k];
            a4 += x * w[4 * din + k];
            a5 += x * w[5 * din + k];
            a6 += x * w[6 * din + k];
            a7 += x * w[7 * din + k];
        }
        vec* o = out + j;
        o[0] = a0, o[1] = a1, o[2] = a2, o[3] = a3, o[4] = a4, o[5] = a5, o[6] = a6, o[7] = a7;
    }
    for (; j < dout; ++j) {
        vec a = zero + b[j];
        const float* w = W + static_cast<int64_t>(j) * din;
        for (int k = 0; k < din; ++k) a += in[k] * w[k];
        out[j] = a;
    }
    if (relu) {
        for (int u = 0; u < dout; ++u) out[u] = out[u] > zero ? out[u] : zero;
    }
}

}  // namespace

extern "C" {

int lf_mlp_abi_version() { return 1; }

// n rows; dims (n_layers + 1,); weights / biases: n_layers pointers. Plain output: out (n, d_L). Density epilogue
// (density != 0): sigma (n,), out (n, d_L - 1) = g. Returns 0, or 1 on bad arguments.
int lf_mlp_forward(int64_t n, const float* in, int32_t n_layers, const int64_t* dims, const float* const* weights,
                   const float* const* biases, int32_t density, float* sigma, float* out, int32_t n_threads) {
    if (n < 0 || n_layers < 1) return 1;
    if (n == 0) return 0;  // (empty tensors may come with null pointers)
    int widest = 0;
    for (int l = 0; l <= n_layers; ++l) {
        if (dims[l] < 1 || dims[l] > 4096) return 1;
        widest = std::max<int>(widest, static_cast<int>(dims[l]));
    }
    const int d0 = static_cast<int>(dims[0]), dl = static_cast<int>(dims[n_layers]);
    if (density && (dl < 1 || sigma == nullptr)) return 1;
    if (n_threads < 1) n_threads = 1;
    const int64_t n_blocks = (n + kB - 1) / kB;
    const int nt = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(1, n_blocks / 16)));
#pragma omp parallel num_threads(nt)
    {
        std::vector<vec> buf_a(widest), buf_b(widest);
        float tmp[kB];
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            const int64_t r0 = blk * kB;
            const int m = static_cast<int>(std::min<int64_t>(kB, n - r0));
            vec* a = buf_a.data();
            vec* b = buf_b.data();
            for (int k = 0; k < d0; ++k) {  // transpose the block's rows in (rows past n: zeros)
                for (int i = 0; i < kB; ++i) tmp[i] = i < m ? in[(r0 + i) * d0 + k] : 0.0f;
                __builtin_memcpy(&a[k], tmp, sizeof(tmp));
            }
            for (int l = 0; l < n_layers; ++l) {
                layer(weights[l], biases[l], static_cast<int>(dims[l]), static_cast<int>(dims[l + 1]), a, b,
                      l + 1 < n_layers);
                std::swap(a, b);
            }
            // a holds the last layer: [dl][kB]
            if (density) {
                __builtin_memcpy(tmp, &a[0], sizeof(tmp));
                for (int i = 0; i < m; ++i) sigma[r0 + i] = std::exp(tmp[i] - 1.0f);
                for (int u = 1; u < dl; ++u) {
                    __builtin_memcpy(tmp, &a[u], sizeof(tmp));
                    for (int i = 0; i < m; ++i) out[(r0 + i) * (dl - 1) + (u - 1)] = tmp[i];
                }
            } else {
                for (int u = 0; u < dl; ++u) {
                    __builtin_memcpy(tmp, &a[u], sizeof(tmp));
                    for (int i = 0; i < m; ++i) out[(r0 + i) * dl + u] = tmp[i];
                }
            }
        }
    }
    return 0;
}

}  // extern "C"
