/* Template body (see fl_instantiate.h): metric-learning kernels (lane helpers,
 * norms, distances, the triplet loss, batch-hard and batch-all mining); the
 * contrastive cross-entropy is fl_contrastive_impl.h. Matrices are C-contiguous
 * rows. Every function works on a range of rows (or columns) that the Cython
 * caller hands to one thread; reductions run in float64 over fixed-size blocks
 * (FL_SUM_BLOCK), so results do not depend on the split. */

/* sqrt of every lane: the hardware instruction of the level being compiled
 * (libm sqrt does not vectorise without -fno-math-errno). Correctly rounded;
 * sqrt(-x) = NaN, sqrt(inf) = inf, NaN propagates. */
FL_INL V N_(vsqrt)(V x) {
#if defined(__AVX512F__)
#if FL_DOUBLE
    return (V)_mm512_sqrt_pd((__m512d)x);
#else
    return (V)_mm512_sqrt_ps((__m512)x);
#endif
#elif defined(__AVX__)
    T buf[W];
    N_(vstore)(buf, x);
#if FL_DOUBLE
    for (int j = 0; j < W; j += 4) _mm256_storeu_pd(buf + j, _mm256_sqrt_pd(_mm256_loadu_pd(buf + j)));
#else
    for (int j = 0; j < W; j += 8) _mm256_storeu_ps(buf + j, _mm256_sqrt_ps(_mm256_loadu_ps(buf + j)));
#endif
    return N_(vload)(buf);
#elif defined(__SSE2__)
    T buf[W];
    N_(vstore)(buf, x);
#if FL_DOUBLE
    for (int j = 0; j < W; j += 2) _mm_storeu_pd(buf + j, _mm_sqrt_pd(_mm_loadu_pd(buf + j)));
#else
    for (int j = 0; j < W; j += 4) _mm_storeu_ps(buf + j, _mm_sqrt_ps(_mm_loadu_ps(buf + j)));
#endif
    return N_(vload)(buf);
#else
    V r;
    for (int j = 0; j < W; j++) r[j] = (T)sqrt((double)x[j]);
    return r;
#endif
}

static void N_(sqrt_array)(const T *x, T *y, int64_t n) {
    for (int64_t i = 0; i < n; i += W) N_(vstore_n)(y + i, N_(vsqrt)(N_(vload_n)(x + i, n - i, 0)), n - i);
}

/* sign(v): -1, 0, +1, NaN for NaN. */
FL_INL V N_(vsign)(V v) {
    V one = N_(vset1)(1), zero = N_(vset1)(0);
    V s = N_(vsel)(v > (T)0, one, zero) - N_(vsel)(v < (T)0, one, zero);
    return N_(vsel)(v != v, v, s);
}

/* Lane index vector {0, 1, ..., W-1} + start. */
FL_INL VI N_(viota)(int64_t start) {
    TI buf[W];
    for (int j = 0; j < W; j++) buf[j] = (TI)(start + j);
    VI v;
    memcpy(&v, buf, sizeof v);
    return v;
}

FL_INL VI N_(vseli)(VI mask, VI a, VI b) { return (mask & a) | (~mask & b); }

/* W int32 labels widened to the lane integer type; lanes at or past n read `pad`. */
typedef int32_t N_(VL) __attribute__((vector_size(W * 4), aligned(4), may_alias));
FL_INL VI N_(vload_lab)(const int32_t *p, int64_t n, int32_t pad) {
    if (n >= W) return __builtin_convertvector(*(const N_(VL) *)p, VI);
    int32_t buf[W];
    for (int j = 0; j < W; j++) buf[j] = j < n ? p[j] : pad;
    return __builtin_convertvector(*(const N_(VL) *)buf, VI);
}

/* ----------------------------------------------------------------------------
 * Norms and normalisation */

/* out[r] = ||x_r||^2 (float64) for n rows of D. */
static void N_(sq_norms)(const T *x, int64_t n, int64_t D, double *out) {
    for (int64_t r = 0; r < n; r++) out[r] = N_(row_dot)(x + r * D, x + r * D, D);
}

/* out_r = scale * x_r / max(||x_r||, eps) (torch.nn.functional.normalize, then scaled). */
static void N_(normalize_rows)(const T *x, T *out, int64_t n, int64_t D, double scale, double eps) {
    for (int64_t r = 0; r < n; r++) {
        const T *xr = x + r * D;
        T *orow = out + r * D;
        double nrm = sqrt(N_(row_dot)(xr, xr, D));
        const T f = (T)(scale / (nrm > eps || nrm != nrm ? nrm : eps));
        for (int64_t k = 0; k < D; k += W) N_(vstore_n)(orow + k, N_(vload_n)(xr + k, D - k, 0) * f, D - k);
    }
}

/* Backward of normalize: with y = x / max(||x||, eps) and gh = dL/dy (times gscale),
 *   ||x|| > eps:  g = gscale * (gh - x (x.gh) / ||x||^2) / ||x||
 *   otherwise:    g = gscale * gh / eps.
 * g may alias gh. */
static void N_(normalize_grad_rows)(const T *x, const T *gh, T *g, int64_t n, int64_t D,
                                    double eps, double gscale) {
    for (int64_t r = 0; r < n; r++) {
        const T *xr = x + r * D, *hr = gh + r * D;
        T *gr = g + r * D;
        const double xx = N_(row_dot)(xr, xr, D), xg = N_(row_dot)(xr, hr, D);
        const double nrm = sqrt(xx);
        T a, b;
        if (nrm > eps || nrm != nrm) { a = (T)(gscale / nrm); b = (T)(gscale * xg / (xx * nrm)); }
        else { a = (T)(gscale / eps); b = 0; }
        for (int64_t k = 0; k < D; k += W) {
            V h = N_(vload_n)(hr + k, D - k, 0), xv = N_(vload_n)(xr + k, D - k, 0);
            N_(vstore_n)(gr + k, h * a - xv * b, D - k);
        }
    }
}

/* ----------------------------------------------------------------------------
 * pairwise_distances epilogue, in place over nr rows of G = x y^T (M columns):
 *   FL_DIST_SQ      max(a_r + b_j - 2 G, 0)     (a, b: squared norms)
 *   FL_DIST_EUCLID  sqrt of that
 *   FL_DIST_COSINE  clip(1 - G a_r b_j, 0, 2)   (a, b: inverse norms, 0 for zero rows)
 * diag0 >= 0 (x is y): entry (r, diag0 + r) is a self-distance, set to exactly 0
 * unless the row is NaN. */
FL_INL V N_(dist_v)(V g, T ar, V b, int mode) {
    const V zero = N_(vset1)(0);
    if (mode == FL_DIST_COSINE) {
        const V d = (T)1 - g * ar * b;
        return N_(vsel)(d < (T)0, zero, N_(vsel)(d > (T)2, N_(vset1)(2), d));
    }
    V d = (ar + b) - (T)2 * g;
    d = N_(vsel)(d < (T)0, zero, d);
    return mode == FL_DIST_EUCLID ? N_(vsqrt)(d) : d;
}

static void N_(dist_rows)(T *G, int64_t nr, int64_t M, int64_t diag0, const T *a, const T *b, int mode) {
    for (int64_t r = 0; r < nr; r++) {
        T *gr = G + r * M;
        const T ar = a[r];
        for (int64_t j = 0; j < M; j += W)
            N_(vstore_n)(gr + j, N_(dist_v)(N_(vload_n)(gr + j, M - j, 0), ar, N_(vload_n)(b + j, M - j, 0), mode),
                         M - j);
        if (diag0 >= 0 && diag0 + r < M && ar == ar) gr[diag0 + r] = 0;
    }
}

/* The self-distances of x (N rows) from syrk's lower triangle: G (N x N) holds x x^T at
 * j <= i; the columns [j0, j0 + nc) (j0 a multiple of W, nc <= W) of the lower triangle
 * become distances as dist_rows makes them (a = b), and their mirror images the rows
 * [j0, j0 + nc) right of the diagonal. Tiles of W x W below the diagonal tile are turned in
 * registers (vtranspose), so each mirrored row is written left to right; the diagonal
 * tile's lower half goes one element at a time. */
static void N_(dist_sym_w)(T *G, int64_t N, int64_t j0, int64_t nc, const T *a, int mode) {
    for (int64_t j = j0; j < j0 + nc; j++) {
        for (int64_t i = j; i < j0 + nc; i++) {
            const T d = N_(dist_v)(N_(vset1)(G[i * N + j]), a[i], N_(vset1)(a[j]), mode)[0];
            G[i * N + j] = G[j * N + i] = i == j && a[i] == a[i] ? 0 : d;
        }
    }
    if (j0 + nc == N) return;                   /* nc == W below: rows past the tile exist */
    const V bj = N_(vload)(a + j0);
    for (int64_t i0 = j0 + W; i0 < N; i0 += W) {
        const int64_t nr = N - i0 < W ? N - i0 : W;
        V v[W];
        for (int64_t r = 0; r < nr; r++) {
            T *g = G + (i0 + r) * N + j0;
            v[r] = N_(dist_v)(N_(vload)(g), a[i0 + r], bj, mode);
            N_(vstore)(g, v[r]);
        }
        if (nr == W) {
            N_(vtranspose)(v);
            for (int c = 0; c < W; c++) N_(vstore)(G + (j0 + c) * N + i0, v[c]);
        } else {
            for (int64_t r = 0; r < nr; r++)
                for (int c = 0; c < W; c++) G[(j0 + c) * N + i0 + r] = v[r][c];
        }
    }
}
/* dist_sym_w over the columns [j0, j0 + nc), j0 a multiple of FL_DIST_SYM_COLS (a multiple
 * of every level's W), nc <= FL_DIST_SYM_COLS. */
static void N_(dist_sym_cols)(T *G, int64_t N, int64_t j0, int64_t nc, const T *a, int mode) {
    for (int64_t s = j0; s < j0 + nc; s += W)
        N_(dist_sym_w)(G, N, s, j0 + nc - s < W ? j0 + nc - s : W, a, mode);
}

/* ----------------------------------------------------------------------------
 * Triplet margin loss (PyTorch): d(x, y) = ||x - y + eps||_p,
 *   l = max(d(a, p) - d_neg + margin, 0),  d_neg = d(a, n) or, with swap,
 *   min(d(a, n), d(p, n)); squared: d(x, y)^2 (p = 2). */

/* sum_k f(x_k - y_k + eps): f = |.| (p=1), (.)^2 (p=2), |.|^p (general); for
 * p = inf the max of |.| (NaN wins). Float64 blocks. */
FL_INL double N_(pnorm_acc)(const T *x, const T *y, int64_t D, T eps, int kind, T pexp) {
    if (kind == FL_PNORM_INF) {
        V m = N_(vset1)(0);
        for (int64_t k = 0; k < D; k += W) {
            int64_t nk = D - k;
            V f = N_(vabs)(N_(vload_n)(x + k, nk, 0) - N_(vload_n)(y + k, nk, 0) + eps);
            f = N_(vkeep_first)(f, nk);
            m = N_(vmax_nan)(m, f);
        }
        return N_(vhmax_nan)(m);
    }
    double s = 0.0;
    for (int64_t b = 0; b < D; b += FL_SUM_BLOCK) {
        int64_t end = b + FL_SUM_BLOCK < D ? b + FL_SUM_BLOCK : D;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            int64_t nk = end - k;
            V v = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(y + k, nk, 0) + eps;
            V f;
            if (kind == FL_PNORM_2) f = v * v;
            else if (kind == FL_PNORM_1) f = N_(vabs)(v);
            else f = N_(vexp)(pexp * N_(vlog)(N_(vabs)(v)));   /* |v|^p; 0 at v = 0 */
            f = N_(vkeep_first)(f, nk);
            acc += f;
        }
        s += N_(vhsum)(acc);
    }
    return s;
}

/* Distance from the accumulated value, and the scale c of its gradient
 * dd/dv = c * u(v) (see dnorm). Zero subgradient at d = 0. */
static double N_(pnorm_finish)(double s, int kind, double pexp, int squared, double *c) {
    double d;
    switch (kind) {
    case FL_PNORM_2:
        if (squared) { *c = 2.0; return s; }
        d = sqrt(s);
        *c = d > 0 || d != d ? 1.0 / d : 0.0;   /* NaN stays NaN */
        return d;
    case FL_PNORM_1:
        *c = 1.0;
        return s;
    case FL_PNORM_INF:
        *c = 1.0;  /* divided by the number of maximal entries by the caller */
        return s;
    default:
        d = pow(s, 1.0 / pexp);
        *c = d > 0 || d != d ? 1.0 / pow(d, pexp - 1.0) : 0.0;
        return d;
    }
}

/* dd/dv up to the row scale c: p=2: v; p=1: sign(v); inf: sign(v) where |v| = d;
 * general: sign(v) |v|^(p-1). */
FL_INL V N_(dnorm)(V v, int kind, T c, T d, T pm1) {
    switch (kind) {
    case FL_PNORM_2: return v * c;
    case FL_PNORM_1: return N_(vsign)(v) * c;
    case FL_PNORM_INF: return N_(vsel)(N_(vabs)(v) == d, N_(vsign)(v) * c, N_(vsel)(v != v, v, N_(vset1)(0)));
    default: {
        V av = N_(vabs)(v);
        V m = N_(vsign)(v) * N_(vexp)(pm1 * N_(vlog)(av)) * c;
        return N_(vsel)(v == (T)0, N_(vset1)(0), m);
    }
    }
}

/* Number of k with |x_k - y_k + eps| == m (the maximal entries of an inf-norm). */
static int64_t N_(count_max)(const T *x, const T *y, int64_t D, T eps, T m) {
    int64_t c = 0;
    for (int64_t k = 0; k < D; k++) {
        T v = x[k] - y[k] + eps;
        c += (v < 0 ? -v : v) == m;
    }
    return c;
}

/* Rows [0, nrows) of the three (nrows, D) inputs: loss[r] per row; with ga, the
 * gradients of gs * sum(loss) (clamp_min's subgradient: active when the hinge
 * argument is >= 0, as PyTorch; NaN in all three rows when it is NaN). stream: the
 * gradients go out through streaming writers (fl_vec.h's swriter), which see the rows
 * as one run of nrows * D elements, so only where D is a multiple of W. */
FL_INL void N_(triplet_body)(const T *a, const T *p, const T *n, T *ga, T *gp, T *gn,
                             int64_t nrows, int64_t D, int kind, double pexp, double eps,
                             double margin, int swap, int squared, double gs, double *loss,
                             int stream) {
    const T te = (T)eps, tp = (T)pexp, pm1 = (T)(pexp - 1.0);
    N_(swriter) sw3[3];
    T *const g[3] = {ga, gp, gn};
    N_(swriter) *sw = N_(sw_begin_all)(sw3, stream && ga && D % W == 0, g, 3);
    for (int64_t r = 0; r < nrows; r++) {
        const T *ar = a + r * D, *pr = p + r * D, *nr = n + r * D;
        double c1, c2, c3 = 0.0, d3 = 0.0;
        const double d1 = N_(pnorm_finish)(N_(pnorm_acc)(ar, pr, D, te, kind, tp), kind, pexp, squared, &c1);
        const double d2 = N_(pnorm_finish)(N_(pnorm_acc)(ar, nr, D, te, kind, tp), kind, pexp, squared, &c2);
        double wa = 1.0, wp = 0.0;   /* shares of d(a, n) and d(p, n) in d_neg */
        double dneg = d2;
        if (swap) {
            d3 = N_(pnorm_finish)(N_(pnorm_acc)(pr, nr, D, te, kind, tp), kind, pexp, squared, &c3);
            if (d3 < d2) { dneg = d3; wa = 0.0; wp = 1.0; }
            else if (!(d2 < d3)) { dneg = d2 == d3 ? d2 : NAN; wa = wp = 0.5; }  /* tie or NaN */
        }
        const double x = d1 - dneg + margin;
        loss[r] = x < 0 ? 0.0 : x;
        if (!ga) continue;
        const int64_t o = r * D;     /* the row's offset in the gradients */
        if (!(x >= 0)) {             /* inactive: 0; a NaN loss: NaN (the NaN never disappears) */
            const V v = N_(vset1)(x < 0 ? (T)0 : (T)NAN);
            for (int64_t k = 0; k < D; k += W) {
                N_(sw_store)(sw ? &sw[0] : NULL, ga, o + k, v, D - k);
                N_(sw_store)(sw ? &sw[1] : NULL, gp, o + k, v, D - k);
                N_(sw_store)(sw ? &sw[2] : NULL, gn, o + k, v, D - k);
            }
            continue;
        }
        if (kind == FL_PNORM_INF) {
            c1 /= (double)N_(count_max)(ar, pr, D, te, (T)d1);
            if (wa != 0) c2 /= (double)N_(count_max)(ar, nr, D, te, (T)d2);
            if (wp != 0) c3 /= (double)N_(count_max)(pr, nr, D, te, (T)d3);
        }
        const T s1 = (T)(gs * c1), s2 = (T)(gs * wa * c2), s3 = (T)(gs * wp * c3);
        const T e1 = (T)d1, e2 = (T)d2, e3 = (T)d3;
        for (int64_t k = 0; k < D; k += W) {
            int64_t nk = D - k;
            V av = N_(vload_n)(ar + k, nk, 0), pv = N_(vload_n)(pr + k, nk, 0), nv = N_(vload_n)(nr + k, nk, 0);
            V u1 = N_(dnorm)(av - pv + te, kind, s1, e1, pm1);
            V u2 = wa != 0 ? N_(dnorm)(av - nv + te, kind, s2, e2, pm1) : N_(vset1)(0);
            V u3 = wp != 0 ? N_(dnorm)(pv - nv + te, kind, s3, e3, pm1) : N_(vset1)(0);
            N_(sw_store)(sw ? &sw[0] : NULL, ga, o + k, u1 - u2, nk);
            N_(sw_store)(sw ? &sw[1] : NULL, gp, o + k, -u1 - u3, nk);
            N_(sw_store)(sw ? &sw[2] : NULL, gn, o + k, u2 + u3, nk);
        }
    }
    N_(sw_finish_all)(sw, g, 3, nrows * D);
    N_(vstream_fence)(sw != NULL);
}
/* triplet_body, with the Euclidean distance (the default) compiled apart: its norm
 * loops then carry no test of the kind (the loss of 8192 x 128 float32 on one thread:
 * 0.43 -> 0.33 ns an element). */
static void N_(triplet_rows)(const T *a, const T *p, const T *n, T *ga, T *gp, T *gn,
                             int64_t nrows, int64_t D, int kind, double pexp, double eps,
                             double margin, int swap, int squared, double gs, double *loss,
                             int stream) {
    if (kind == FL_PNORM_2)
        N_(triplet_body)(a, p, n, ga, gp, gn, nrows, D, FL_PNORM_2, pexp, eps, margin, swap, squared,
                         gs, loss, stream);
    else
        N_(triplet_body)(a, p, n, ga, gp, gn, nrows, D, kind, pexp, eps, margin, swap, squared, gs,
                         loss, stream);
}

/* ----------------------------------------------------------------------------
 * Batch-hard triplet mining over the lower triangle of the distance matrix.
 * The caller walks blocks of rows [r0, r0 + nr) and computes, with BLAS, their
 * dot products G with the rows [0, r0 + nr) only; d_ij^2 = sqn_i + sqn_j - 2 G_ij.
 * Only G's lower triangle is read (G_ij of row i for j < i: syrk's output will do).
 * hard_rows gives each anchor i of the block its candidates j < i; hard_cols then
 * gives the anchors j < i, before the block or in it, each block row i as a
 * candidate. Candidates of an anchor arrive in increasing index order, so strict
 * comparisons keep the first index among ties. Best values/indices (-1: none yet)
 * per anchor: bp/bpi the farthest positive (same label, j != i), bn/bni the nearest
 * negative (other label); nanf != 0 when a NaN distance was seen. */

/* Stores the lanes of an index vector as int32 (n < W: the first n). */
FL_INL void N_(vstore_lab)(int32_t *p, VI v, int64_t n) {
    N_(VL) t = __builtin_convertvector(v, N_(VL));
    if (n >= W) { *(N_(VL) *)p = t; return; }
    for (int j = 0; j < n; j++) p[j] = t[j];
}

/* One vector of candidates j (lanes jv) for anchor i: distances d, masks of positives
 * (same label, not i) and negatives, running best values and indices. */
#define FL_HARD_STEP(d, same, notself, jv)                                      \
    do {                                                                        \
        V pv_ = N_(vsel)((same) & (notself), d, ninf);                          \
        V nv_ = N_(vsel)(same, pinf, d);                                        \
        VI up_ = pv_ > bp, un_ = nv_ < bn;                                      \
        bp = N_(vsel)(up_, pv_, bp);                                            \
        bpi = N_(vseli)(up_, jv, bpi);                                          \
        bn = N_(vsel)(un_, nv_, bn);                                            \
        bni = N_(vseli)(un_, jv, bni);                                          \
        dsum += d;  /* NaN anywhere makes the sum NaN (it cannot reach -inf) */ \
    } while (0)

static void N_(hard_rows)(const T *G, int64_t nr, int64_t nc, int64_t r0, const T *sqn,
                          const int32_t *lab, T *bp_out, int32_t *bpi_out, T *bn_out,
                          int32_t *bni_out, int32_t *nanf) {
    const V ninf = N_(vset1)(-(T)INFINITY), pinf = N_(vset1)((T)INFINITY);
    const VI ones = ~((VI)N_(vset1)(0) & 0);
    for (int64_t r = 0; r < nr; r++) {
        const int64_t i = r0 + r;
        const T *gr = G + r * nc;
        const T si = sqn[i];
        const TI li = (TI)lab[i];
        V bp = ninf, bn = pinf, dsum = N_(vset1)(0);
        VI bpi = ~ones, bni = ~ones;
        bpi -= 1;
        bni -= 1;
        VI jv = N_(viota)(0);
        const int64_t nci = i < nc ? i : nc;    /* the lower triangle: j < i */
        int64_t j = 0;
        for (; j + W <= nci; j += W, jv += W) {
            V d = (si + N_(vload)(sqn + j)) - (T)2 * N_(vload)(gr + j);
            VI same = N_(vload_lab)(lab + j, W, 0) == li;
            FL_HARD_STEP(d, same, ones, jv);
        }
        if (j < nci) {
            const int64_t nj = nci - j;
            const VI in = N_(vfirst)(nj);
            V d = (si + N_(vload_n)(sqn + j, nj, 0)) - (T)2 * N_(vload_n)(gr + j, nj, 0);
            d = N_(vsel)(in, d, N_(vset1)(0));
            VI same = N_(vload_lab)(lab + j, nj, 0) == li;
            /* padding lanes: "same" and "self", so neither positive nor negative */
            same |= ~in;
            FL_HARD_STEP(d, same, in, jv);
        }
        int64_t pi = -1, ni = -1;
        T pbest = -(T)INFINITY, nbest = (T)INFINITY;
        double ds = 0.0;
        for (int k = 0; k < W; k++) {
            ds += (double)dsum[k];
            if (bpi[k] >= 0 && (bp[k] > pbest || (bp[k] == pbest && bpi[k] < pi))) { pbest = bp[k]; pi = bpi[k]; }
            if (bni[k] >= 0 && (bn[k] < nbest || (bn[k] == nbest && bni[k] < ni))) { nbest = bn[k]; ni = bni[k]; }
        }
        bp_out[i] = pbest;
        bpi_out[i] = (int32_t)pi;
        bn_out[i] = nbest;
        bni_out[i] = (int32_t)ni;
        nanf[i] = ds != ds;
    }
}

/* Anchors [c0, c1) (c1 <= r0 + nr - 1) against each of the block's rows i = r0 .. r0 + nr - 1
 * after them (anchor < i) as candidates. The anchors' running bests live in L1
 * (FL_HARD_CHUNK at a time) while the block is swept row by row, each row's segment read
 * sequentially. */
#define FL_HARD_CHUNK 256
static void N_(hard_cols)(const T *G, int64_t nr, int64_t nc, int64_t r0, int64_t c0, int64_t c1,
                          const T *sqn, const int32_t *lab, T *bp_io, int32_t *bpi_io, T *bn_io,
                          int32_t *bni_io, int32_t *nanf) {
    V bpa[FL_HARD_CHUNK / W], bna[FL_HARD_CHUNK / W], sja[FL_HARD_CHUNK / W], dsa[FL_HARD_CHUNK / W];
    VI bpia[FL_HARD_CHUNK / W], bnia[FL_HARD_CHUNK / W], lja[FL_HARD_CHUNK / W];
    const V ninf = N_(vset1)(-(T)INFINITY), pinf = N_(vset1)((T)INFINITY);
    for (int64_t cs = c0; cs < c1; cs += FL_HARD_CHUNK) {
        const int64_t n = c1 - cs < FL_HARD_CHUNK ? c1 - cs : FL_HARD_CHUNK;
        const int64_t nv = (n + W - 1) / W;
        for (int64_t v = 0; v < nv; v++) {
            const int64_t j = cs + v * W, nj = n - v * W;
            bpa[v] = N_(vload_n)(bp_io + j, nj, 0);
            bna[v] = N_(vload_n)(bn_io + j, nj, 0);
            bpia[v] = N_(vload_lab)(bpi_io + j, nj, 0);
            bnia[v] = N_(vload_lab)(bni_io + j, nj, 0);
            sja[v] = N_(vload_n)(sqn + j, nj, 0);
            lja[v] = N_(vload_lab)(lab + j, nj, 0);
            dsa[v] = N_(vset1)(0);
        }
        for (int64_t r = cs + 1 > r0 ? cs + 1 - r0 : 0; r < nr; r++) {
            const int64_t i = r0 + r;
            const T *gr = G + r * nc + cs;
            const T *next = r + 2 < nr ? gr + 2 * nc : gr;
            const T si = sqn[i];
            const TI li = (TI)lab[i];
            const VI iv = (VI)N_(vset1)(0) + (TI)i;
            for (int64_t v = 0; v < nv; v++) {
                if ((v * W * (int64_t)sizeof(T)) % 64 == 0) FL_PREFETCH(next, v * W, 0);
                V d = (si + sja[v]) - (T)2 * N_(vload_n)(gr + v * W, n - v * W, 0);
                VI same = lja[v] == li, before = ~(same & 0);
                if (cs + (v + 1) * W > i) {
                    /* anchors from i on: not yet (G's upper triangle: loaded, masked out) */
                    before = N_(viota)(cs + v * W) < (TI)i;
                    same |= ~before;
                    d = N_(vsel)(before, d, N_(vset1)(0));
                }
                V bp = bpa[v], bn = bna[v], dsum = dsa[v];
                VI bpi = bpia[v], bni = bnia[v];
                FL_HARD_STEP(d, same, before, iv);
                bpa[v] = bp; bna[v] = bn; bpia[v] = bpi; bnia[v] = bni; dsa[v] = dsum;
            }
        }
        for (int64_t v = 0; v < nv; v++) {
            const int64_t j = cs + v * W, nj = n - v * W;
            N_(vstore_n)(bp_io + j, bpa[v], nj);
            N_(vstore_n)(bn_io + j, bna[v], nj);
            N_(vstore_lab)(bpi_io + j, bpia[v], nj);
            N_(vstore_lab)(bni_io + j, bnia[v], nj);
            VI isn = N_(vload_lab)(nanf + j, nj, 0) | (dsa[v] != dsa[v]);
            N_(vstore_lab)(nanf + j, isn, nj);
        }
    }
}
#undef FL_HARD_CHUNK
#undef FL_HARD_STEP

/* Anchors [i0, i0 + n): the mined pairs' distances recomputed exactly from the
 * embeddings E (N x D), the loss and the gradient coefficients
 *   loss[i] = max(d_ap - d_an + margin, 0)    (0 when the anchor has no pair, NaN for NaN)
 *   gradient: e_i += cp (e_i - e_p) + cn (e_i - e_n), e_p -= cp (..), e_n -= cn (..)
 * A NaN seen while mining makes the loss and the coefficients NaN. */
static void N_(hard_finish)(const T *E, int64_t D, int64_t i0, int64_t n, const int32_t *pos,
                            const int32_t *neg, const int32_t *nanf, double margin, int squared,
                            double *loss, double *cp, double *cn) {
    for (int64_t i = i0; i < i0 + n; i++) {
        const int64_t pi = pos[i], ni = neg[i];
        if (nanf[i]) { loss[i] = NAN; cp[i] = NAN; cn[i] = NAN; continue; }
        if (pi < 0 || ni < 0) { loss[i] = 0.0; cp[i] = 0.0; cn[i] = 0.0; continue; }
        const T *ei = E + i * D;
        double dp = 0.0, dn = 0.0;
        for (int64_t b = 0; b < D; b += FL_SUM_BLOCK) {
            int64_t end = b + FL_SUM_BLOCK < D ? b + FL_SUM_BLOCK : D;
            V ap = N_(vset1)(0), an = N_(vset1)(0);
            for (int64_t k = b; k < end; k += W) {
                V e = N_(vload_n)(ei + k, end - k, 0);
                V u = e - N_(vload_n)(E + pi * D + k, end - k, 0);
                V v = e - N_(vload_n)(E + ni * D + k, end - k, 0);
                ap += u * u;
                an += v * v;
            }
            dp += N_(vhsum)(ap);
            dn += N_(vhsum)(an);
        }
        if (!squared) { dp = sqrt(dp); dn = sqrt(dn); }
        const double x = dp - dn + margin;
        loss[i] = x < 0 ? 0.0 : x;    /* NaN (inf - inf) stays NaN */
        if (x != x) {
            cp[i] = NAN;
            cn[i] = NAN;
        } else if (x > 0) {
            cp[i] = squared ? 2.0 : (dp > 0 ? 1.0 / dp : 0.0);
            cn[i] = squared ? -2.0 : (dn > 0 ? -1.0 / dn : 0.0);
        } else {
            cp[i] = 0.0;
            cn[i] = 0.0;
        }
    }
}

/* Columns [c0, c1) of the batch-hard gradient g (N x D, zeroed by the caller),
 * anchors in order: every element sees the same sequence of updates for any
 * split of the columns between threads. */
static void N_(hard_scatter)(const T *E, T *g, int64_t N, int64_t D, int64_t c0, int64_t c1,
                             const int32_t *pos, const int32_t *neg, const double *cp,
                             const double *cn, double gs) {
    const int64_t w = c1 - c0;
    for (int64_t i = 0; i < N; i++) {
        const int64_t idx[2] = {pos[i], neg[i]};
        const double co[2] = {cp[i], cn[i]};
        T *gi = g + i * D + c0;
        const T *ei = E + i * D + c0;
        for (int s = 0; s < 2; s++) {
            if (co[s] == 0) continue;
            const T c = (T)(gs * co[s]);
            if (idx[s] < 0) {    /* a NaN row without a pair */
                for (int64_t k = 0; k < w; k++) gi[k] += c;
                continue;
            }
            T *gj = g + idx[s] * D + c0;
            const T *ej = E + idx[s] * D + c0;
            for (int64_t k = 0; k < w; k += W) {
                V u = (N_(vload_n)(ei + k, w - k, 0) - N_(vload_n)(ej + k, w - k, 0)) * c;
                N_(vstore_n)(gi + k, N_(vload_n)(gi + k, w - k, 0) + u, w - k);
                N_(vstore_n)(gj + k, N_(vload_n)(gj + k, w - k, 0) - u, w - k);
            }
        }
    }
}

/* ----------------------------------------------------------------------------
 * Batch-all triplet mining: for anchor i every (positive p, negative n) pair with
 * l = d_ap - d_an + margin > 0. Counted without enumerating the triplets: the
 * smaller of the two distance lists is sorted, each entry of the other is
 * located in it by binary search, suffix/prefix sums give the loss.
 * In place: the row of dot products becomes the row of dL/d(d^2) weights
 * (positives: number of active negatives, negatives: minus the number of active
 * positives; times 1/(2d) for Euclidean distances), loss[r] = sum of l over the
 * anchor's active triplets, count[r] = their number. */
typedef struct { T v; int32_t i; } N_(pair);
_Static_assert(sizeof(N_(pair)) <= FL_MINE_PAIR_BYTES, "fl_all_mine_scratch_bytes undercounts");

static int N_(pair_cmp)(const void *x, const void *y) {
    const T a = ((const N_(pair) *)x)->v, b = ((const N_(pair) *)y)->v;
    return (a > b) - (a < b);
}

/* dL/d(d^2) per unit of dL/dd. */
FL_INL T N_(dd_factor)(T d, int squared) { return squared ? (T)1 : (d > 0 ? (T)0.5 / d : (T)0); }

static void N_(all_mine_rows)(T *G, int64_t nr, int64_t N, int64_t r0, const T *sqn,
                              const int32_t *lab, double margin, int squared, double *loss,
                              int64_t *count, void *scratch) {
    /* the layout fl_all_mine_scratch_bytes(N) counts */
    N_(pair) *arr = (N_(pair) *)scratch;                 /* N pairs */
    double *acc = (double *)((char *)scratch + FL_MINE_PAIR_BYTES * N);   /* N + 1 partial sums */
    int64_t *hist = (int64_t *)(acc + N + 1);            /* N + 1 counts */
    for (int64_t r = 0; r < nr; r++) {
        const int64_t i = r0 + r;
        T *x = G + r * N;
        const T si = sqn[i];
        const int32_t li = lab[i];
        VI isnan = (VI)N_(vset1)(0) & 0;
        for (int64_t j = 0; j < N; j += W) {
            V d = (si + N_(vload_n)(sqn + j, N - j, 0)) - (T)2 * N_(vload_n)(x + j, N - j, 0);
            d = N_(vsel)(d < (T)0, N_(vset1)(0), d);
            if (!squared) d = N_(vsqrt)(d);
            d = N_(vkeep_first)(d, N - j);
            isnan |= d != d;
            N_(vstore_n)(x + j, d, N - j);
        }
        int anynan = 0;
        for (int k = 0; k < W; k++) anynan |= isnan[k] != 0;
        if (anynan) {
            loss[r] = NAN;
            count[r] = 0;
            for (int64_t j = 0; j < N; j++) x[j] = (T)NAN;
            continue;
        }
        x[i] = 0;
        int64_t P = 0, Q = 0;
        for (int64_t j = 0; j < N; j++) {
            if (lab[j] != li) Q++;
            else if (j != i) P++;
        }
        if (P == 0 || Q == 0) {
            loss[r] = 0.0;
            count[r] = 0;
            memset(x, 0, (size_t)N * sizeof(T));
            continue;
        }
        double l = 0.0;
        int64_t cnt = 0;
        if (P <= Q) {
            /* sort the positives; each negative n is active with the positives
             * above d_an - margin: arr[k..P) with k its upper bound. */
            int64_t m = 0;
            for (int64_t j = 0; j < N; j++)
                if (lab[j] == li && j != i) { arr[m].v = x[j]; arr[m].i = (int32_t)j; m++; }
            qsort(arr, (size_t)P, sizeof(N_(pair)), N_(pair_cmp));
            acc[P] = 0.0;
            for (int64_t s = P - 1; s >= 0; s--) acc[s] = acc[s + 1] + (double)arr[s].v;
            memset(hist, 0, (size_t)(P + 1) * sizeof(int64_t));
            for (int64_t j = 0; j < N; j++) {
                if (lab[j] == li) continue;
                const T dj = x[j];
                const double t = (double)dj - margin;
                int64_t lo = 0, hi = P;            /* first s with arr[s].v > t */
                while (lo < hi) {
                    int64_t mid = (lo + hi) >> 1;
                    if ((double)arr[mid].v > t) hi = mid; else lo = mid + 1;
                }
                const int64_t c = P - lo;
                if (c) { l += acc[lo] - (double)c * t; cnt += c; }
                hist[lo]++;
                x[j] = -(T)c * N_(dd_factor)(dj, squared);
            }
            x[i] = 0;
            int64_t run = 0;
            for (int64_t s = 0; s < P; s++) {
                run += hist[s];
                x[arr[s].i] = (T)run * N_(dd_factor)(arr[s].v, squared);
            }
        } else {
            /* sort the negatives; each positive p is active with the negatives
             * below d_ap + margin: arr[0..k) with k its lower bound. */
            int64_t m = 0;
            for (int64_t j = 0; j < N; j++)
                if (lab[j] != li) { arr[m].v = x[j]; arr[m].i = (int32_t)j; m++; }
            qsort(arr, (size_t)Q, sizeof(N_(pair)), N_(pair_cmp));
            acc[0] = 0.0;
            for (int64_t s = 0; s < Q; s++) acc[s + 1] = acc[s] + (double)arr[s].v;
            memset(hist, 0, (size_t)(Q + 1) * sizeof(int64_t));
            for (int64_t j = 0; j < N; j++) {
                if (lab[j] != li || j == i) continue;
                const T dj = x[j];
                const double t = (double)dj + margin;
                int64_t lo = 0, hi = Q;            /* first s with arr[s].v >= t */
                while (lo < hi) {
                    int64_t mid = (lo + hi) >> 1;
                    if ((double)arr[mid].v < t) lo = mid + 1; else hi = mid;
                }
                if (lo) { l += (double)lo * t - acc[lo]; cnt += lo; }
                hist[lo]++;
                x[j] = (T)lo * N_(dd_factor)(dj, squared);
            }
            x[i] = 0;
            int64_t run = 0;
            for (int64_t s = Q - 1; s >= 0; s--) {
                run += hist[s + 1];
                x[arr[s].i] = -(T)run * N_(dd_factor)(arr[s].v, squared);
            }
        }
        loss[r] = l;
        count[r] = cnt;
    }
}

/* Tile row ti of W (N x N): W_ij = W_ji = scale * (W_ij + W_ji) for the tiles
 * (ti, tj <= ti); every entry is written by exactly one tile row. */
#define FL_SYM_TILE 64
static void N_(sym_add_tiles)(T *Wm, int64_t N, int64_t ti, T scale) {
    const int64_t i0 = ti * FL_SYM_TILE, i1 = i0 + FL_SYM_TILE < N ? i0 + FL_SYM_TILE : N;
    for (int64_t j0 = 0; j0 <= i0; j0 += FL_SYM_TILE) {
        const int64_t j1 = j0 + FL_SYM_TILE < N ? j0 + FL_SYM_TILE : N;
        for (int64_t i = i0; i < i1; i++) {
            const int64_t jend = j0 == i0 ? i + 1 : j1;
            for (int64_t j = j0; j < jend; j++) {
                const T s = scale * (Wm[i * N + j] + Wm[j * N + i]);
                Wm[i * N + j] = s;
                Wm[j * N + i] = s;
            }
        }
    }
}
#undef FL_SYM_TILE
