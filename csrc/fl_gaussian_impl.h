/* Template body (see fl_instantiate.h): the elementwise Gaussian losses
 * (diagonal Gaussian KL, VAE reconstruction, Gaussian NLL) over flat arrays, and
 * mvn_kl's per-matrix kernel (at the end).
 * Each block function returns its float64 sum, formed from partial sums of
 * FL_SUM_BLOCK elements in the row dtype (fl_vec.h's VD). */

#include "fl_pointwise.h"

/* One vector of nk <= W elements at offset k of gauss_kl_body (below): stores what is
 * asked, returns l with the lanes past nk zeroed. */
FL_INL V N_(gauss_kl_step)(const T *mp, const T *lvp, const T *mq, const T *lvq, T *gmp, T *glvp,
                           T *gmq, T *glvq, T *lelem, int64_t k, int64_t nk, T gscale,
                           N_(swriter) *sw) {
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    V m = N_(vload_n)(mp + k, nk, 0), lv = N_(vload_n)(lvp + k, nk, 0);
    V dm = mq ? m - N_(vload_n)(mq + k, nk, 0) : m;
    V lq, iq, rr;
    if (lvq) {
        lq = N_(vload_n)(lvq + k, nk, 0);
        iq = N_(vexp)(-lq);
        rr = N_(vexp)(lv - lq);
    } else {
        lq = N_(vset1)(0);
        iq = N_(vset1)(1);
        rr = N_(vexp)(lv);
    }
    V gm = dm * iq;                 /* (mp - mq) / vq */
    V dm2 = dm * gm;
    V l = half * ((lq - lv) + (rr - (T)1) + dm2);
    l = N_(vkeep_first)(l, nk);
    if (lelem) N_(vstore_n)(lelem + k, l, nk);
    if (gmp) N_(sw_store)(sw ? &sw[0] : NULL, gmp, k, gm * gscale, nk);
    if (glvp) N_(sw_store)(sw ? &sw[1] : NULL, glvp, k, (rr - (T)1) * hg, nk);
    if (gmq) N_(sw_store)(sw ? &sw[2] : NULL, gmq, k, gm * -gscale, nk);
    if (glvq) N_(sw_store)(sw ? &sw[3] : NULL, glvq, k, ((T)1 - rr - dm2) * hg, nk);
    return l;
}
/* Diagonal Gaussian KL(N(mp, exp(lvp)) || N(mq, exp(lvq))) over n elements:
 *   l = 0.5 (lvq - lvp + r + (mp - mq)^2 / vq - 1),  r = exp(lvp - lvq), 1 / vq = exp(-lvq),
 *   dl/dmp = (mp - mq) / vq = -dl/dmq,  dl/dlvp = 0.5 (r - 1),
 *   dl/dlvq = 0.5 (1 - r - (mp - mq)^2 / vq).
 * mq / lvq NULL: 0 (the standard normal). Gradients (each optional) are scaled
 * by gscale; lelem (optional) gets the per-element loss; sw (or NULL): the gradients'
 * streaming writers, in their order. Returns sum l (float64 over blocks of FL_SUM_BLOCK). */
FL_INL double N_(gauss_kl_body)(const T *mp, const T *lvp, const T *mq, const T *lvq,
                                T *gmp, T *glvp, T *gmq, T *glvq, T *lelem, int64_t n, T gscale,
                                N_(swriter) *sw) {
    VD total = N_(dv_dzero)();
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W)        /* whole vectors: nk a constant */
            acc += N_(gauss_kl_step)(mp, lvp, mq, lvq, gmp, glvp, gmq, glvq, lelem, k, W, gscale, sw);
        if (k < end)
            acc += N_(gauss_kl_step)(mp, lvp, mq, lvq, gmp, glvp, gmq, glvq, lelem, k, end - k, gscale, sw);
        total = N_(dv_widen_add)(total, acc);
    }
    T *const g[4] = {gmp, glvp, gmq, glvq};
    N_(sw_finish_all)(sw, g, 4, n);
    return N_(dv_dsum)(total);
}
/* gauss_kl_body, with the loss alone against the standard normal compiled apart (as
 * nll_block's: the general loop's branches cost it registers at AVX2). stream: the
 * gradients go out through streaming writers (fl_vec.h's swriter). */
static double N_(gauss_kl_block)(const T *mp, const T *lvp, const T *mq, const T *lvq,
                                 T *gmp, T *glvp, T *gmq, T *glvq, T *lelem, int64_t n, T gscale,
                                 int stream) {
    if (!mq && !lvq && !gmp && !glvp && !gmq && !glvq && !lelem)
        return N_(gauss_kl_body)(mp, lvp, NULL, NULL, NULL, NULL, NULL, NULL, NULL, n, gscale, NULL);
    N_(swriter) sw4[4];
    T *const g[4] = {gmp, glvp, gmq, glvq};
    N_(swriter) *sw = N_(sw_begin_all)(sw4, stream, g, 4);
    double s;
    if (!mq && !lvq && gmp && glvp && !gmq && !glvq && !lelem)   /* a VAE's prior term */
        s = N_(gauss_kl_body)(mp, lvp, NULL, NULL, gmp, glvp, NULL, NULL, NULL, n, gscale, sw);
    else
        s = N_(gauss_kl_body)(mp, lvp, mq, lvq, gmp, glvp, gmq, glvq, lelem, n, gscale, sw);
    N_(vstream_fence)(sw != NULL);
    return s;
}

/* One vector of nk <= W elements at offset k of recon_block (below): returns its losses,
 * the lanes past nk zeroed.
 * Reconstruction loss over n elements of recon r and data x: mode 0: squared error
 * (r - x)^2 (sqerr_point), mode 1: binary cross-entropy with logits r and targets x
 * (bce_logits_point, no positive weight), the same per-element values as mse_loss and
 * binary_cross_entropy_with_logits. Gradient (optional) scaled by gscale, streamed with
 * stream (fl_vec.h's swriter); lelem optional. Returns sum l in float64. */
FL_INL V N_(recon_step)(const T *r, const T *x, int mode, T *g, T *lelem, int64_t k, int64_t nk,
                        T gscale, N_(swriter) *sw) {
    V rk = N_(vload_n)(r + k, nk, 0), xk = N_(vload_n)(x + k, nk, 0);
    V l, gk;
    if (mode == 0) {
        N_(sqerr_point)(rk - xk, &l, &gk);     /* padded lanes: l = 0 */
    } else {
        N_(bce_logits_point)(rk, xk, NULL, nk, &l, &gk, NULL, NULL);
        l = N_(vkeep_first)(l, nk);
    }
    if (lelem) N_(vstore_n)(lelem + k, l, nk);
    if (g) N_(sw_store)(sw, g, k, gk * gscale, nk);
    return l;
}
static double N_(recon_block)(const T *r, const T *x, int mode, T *g, T *lelem, int64_t n, T gscale,
                              int stream) {
    /* the BCE form is bound by its arithmetic and measured slower streaming (vae_loss
     * 8192x784 into grad_out, 2 threads: 2.57-2.64 ms plain, 2.69-3.00 streamed), as
     * binary_cross_entropy_with_logits itself */
    N_(swriter) sw0, *sw = N_(sw_begin)(&sw0, stream && mode == 0, g);
    VD total = N_(dv_dzero)();
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W)        /* whole vectors: nk a constant */
            acc += N_(recon_step)(r, x, mode, g, lelem, k, W, gscale, sw);
        if (k < end) acc += N_(recon_step)(r, x, mode, g, lelem, k, end - k, gscale, sw);
        total = N_(dv_widen_add)(total, acc);
    }
    N_(sw_finish)(sw, g, n);
    N_(vstream_fence)(sw != NULL);
    return N_(dv_dsum)(total);
}

/* nll_body's per-block sums (the loss, dl/dvar, and the products' exponents and mantissas). */
typedef struct { V acc, accg, se; N_(VDH) pm_lo, pm_hi; VI negs; } N_(nll_sums);
/* One vector of nk <= W elements at offset k of nll_body (below), into the sums u. */
FL_INL void N_(nll_step)(const T *x, const T *t, const T *var, V vc, V lvc, T *gx, T *gv, T *lelem,
                         int64_t k, int64_t nk, T eps, T cst, T gscale, int want_gv_sum,
                         int products, N_(nll_sums) *u, N_(swriter) *sw) {
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    V d = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(t + k, nk, 0);
    V v, lv = N_(vset1)(0);
    if (var) {
        v = N_(vload_n)(var + k, nk, 1);     /* padded lanes: v = 1, log v = 0 */
        u->negs |= v < 0;                    /* NaN and -0 are not negative */
        v = N_(vsel)(v < eps, N_(vset1)(eps), v);
        if (products) {
            V e;
            N_(VDH) lo, hi;
            N_(dv_widen_halves)(N_(vfrexp1)(v, &e), &lo, &hi);
            u->pm_lo *= lo;
            u->pm_hi *= hi;
            u->se += e;
        } else {
            lv = N_(vlog)(v);
        }
    } else {
        v = vc;
        lv = lvc;
    }
    V iv = (T)1 / v;
    V gxk = d * iv;
    V d2 = d * gxk;                               /* (x - t)^2 / v */
    V l = half * (lv + d2) + cst;
    V gvk = (((T)1 - d2) * iv) * hg;
    l = N_(vkeep_first)(l, nk);
    gvk = N_(vkeep_first)(gvk, nk);
    u->acc += l;
    if (want_gv_sum) u->accg += gvk;
    if (lelem) N_(vstore_n)(lelem + k, l, nk);
    if (gx) N_(sw_store)(sw ? &sw[0] : NULL, gx, k, gxk * gscale, nk);
    if (gv) N_(sw_store)(sw ? &sw[1] : NULL, gv, k, gvk, nk);
}
/* PyTorch's Gaussian negative log-likelihood over n elements, v = max(var, eps):
 *   l = 0.5 (log v + (x - t)^2 / v) + cst,
 *   dl/dx = (x - t) / v,  dl/dvar = 0.5 (1 / v - (x - t)^2 / v^2)
 * (the clamp passes the gradient straight through, as PyTorch's no-grad clamp).
 * var NULL: every element uses vconst, and *gv_sum (if given) gets sum dl/dvar
 * times gscale in float64 (a per-row variance). Else *neg gets whether an entry of var
 * is below 0 (PyTorch's check, here in the pass that reads var: a pass of its own cost
 * the loss a fifth). Gradients optional, scaled by gscale.
 * Without per-element losses the sum of log v is taken as log of products (a log an
 * element made the loss compute-bound): per lane and block the mantissas multiply in
 * float64 (vfrexp1: m in [0.699, 1.398), the product within 2^(+-0.52 FL_SUM_BLOCK / W);
 * in halves, dv_widen_halves) and the exponents add; then one log per
 * lane and block of the product rounded to T, plus what that rounding lost, so the sum
 * keeps the accuracy of a sum of logs also where var is near 1 and the logs are small.
 * sw (or NULL): the streaming writers of gx and gv. */
FL_INL double N_(nll_body)(const T *x, const T *t, const T *var, T vconst, T *gx, T *gv,
                           T *lelem, int64_t n, T eps, T cst, T gscale, double *gv_sum, int *neg,
                           N_(swriter) *sw) {
    VD total = N_(dv_dzero)(), gvs = total, logs = total, exps = total;
    const V vc = N_(vset1)(vconst < eps ? eps : vconst);  /* NaN stays NaN */
    const V lvc = N_(vlog)(vc);
    const int products = var && !lelem;
    N_(nll_sums) u;
    u.negs = (VI){0};
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        u.acc = u.accg = u.se = N_(vset1)(0);
        u.pm_lo = (N_(VDH)){0} + 1.0;
        u.pm_hi = u.pm_lo;
        int64_t k = b;
        for (; k + W <= end; k += W)        /* whole vectors: nk a constant */
            N_(nll_step)(x, t, var, vc, lvc, gx, gv, lelem, k, W, eps, cst, gscale, gv_sum != NULL,
                         products, &u, sw);
        if (k < end)
            N_(nll_step)(x, t, var, vc, lvc, gx, gv, lelem, k, end - k, eps, cst, gscale,
                         gv_sum != NULL, products, &u, sw);
        total = N_(dv_widen_add)(total, u.acc);
        if (gv_sum) gvs = N_(dv_widen_add)(gvs, u.accg);
        if (products) {
            const VD pm = N_(dv_join)(u.pm_lo, u.pm_hi);
            const V p = __builtin_convertvector(pm, V);
            V lost = __builtin_convertvector(pm - __builtin_convertvector(p, VD), V) / p;
            lost = N_(vsel)(lost != lost, N_(vset1)(0), lost);   /* p = 0, inf or NaN: log p is all */
            logs = N_(dv_widen_add)(logs, N_(vlog)(p) + lost);
            exps = N_(dv_widen_add)(exps, u.se);
        }
    }
    T *const g[2] = {gx, gv};
    N_(sw_finish_all)(sw, g, 2, n);
    if (gv_sum) *gv_sum = N_(dv_dsum)(gvs);
    if (var) *neg = N_(vany)(u.negs);
    if (!products) return N_(dv_dsum)(total);
    return N_(dv_dsum)(total) + 0.5 * (N_(dv_dsum)(logs) + FL_LN2 * N_(dv_dsum)(exps));
}
/* nll_body, with the loss alone over a var array compiled apart (the arguments constant
 * there): the general loop's branches kept it from registers at AVX2. stream: the
 * gradients go out through streaming writers (fl_vec.h's swriter). */
static double N_(nll_block)(const T *x, const T *t, const T *var, T vconst, T *gx, T *gv,
                            T *lelem, int64_t n, T eps, T cst, T gscale, double *gv_sum, int *neg,
                            int stream) {
    if (var && !gx && !gv && !lelem && !gv_sum)
        return N_(nll_body)(x, t, var, 0, NULL, NULL, NULL, n, eps, cst, gscale, NULL, neg, NULL);
    N_(swriter) sw2[2];
    T *const g[2] = {gx, gv};
    N_(swriter) *sw = N_(sw_begin_all)(sw2, stream, g, 2);
    double s;
    if (var && gx && gv && !lelem && !gv_sum)       /* both gradients, per-element var */
        s = N_(nll_body)(x, t, var, 0, gx, gv, NULL, n, eps, cst, gscale, NULL, neg, sw);
    else
        s = N_(nll_body)(x, t, var, vconst, gx, gv, lelem, n, eps, cst, gscale, gv_sum, neg, sw);
    N_(vstream_fence)(sw != NULL);
    return s;
}

/* --- mvn_kl: KL(N(mp, Sp) || N(mq, Sq)) of one pair of full covariances -------------
 * Small dense linear algebra in float64 (whatever T), row-major d x d scratch,
 * unblocked loops: for d <= 64 (fastloss/gaussian.py) they beat one LAPACK call per
 * matrix. Compiled per SIMD level like the rest: GCC vectorises the row loops (AVX-512
 * ran 1.5x the baseline's speed at d = 8). With Lp, Lq the Cholesky factors, M = Lq^-1 Lp, z = Lq^-1 (mp - mq):
 *   l = 0.5 (|M|_F^2 + |z|^2 - d) + sum log diag Lq - sum log diag Lp,
 *   dl/dmp = alpha = Sq^-1 (mp - mq) = -dl/dmq,  dl/dSp = 0.5 (Sq^-1 - Sp^-1),
 *   dl/dSq = 0.5 (Sq^-1 - B B^T - alpha alpha^T),  B = Sq^-1 Lp = Lq^-T M. */

#ifndef FL_MVN_SHARED
#define FL_MVN_SHARED
#include <math.h>
/* Gradient outputs of fl_mvn_kl_one, in argument order (mp, Sp, mq, Sq): NULL (not
 * wanted) or the start of a batch of them, in T or (wide[k]) in float64. */
typedef struct fl_mvn_out {
    void *g[4];
    int wide[4];
} fl_mvn_out;
/* Doubles of scratch fl_mvn_kl_one needs: eight d x d matrices and three vectors. */
static inline int64_t fl_mvn_scratch(int64_t d) { return 8 * d * d + 3 * d; }
#endif

/* c = 0.5 (a + a^T) in float64, as _checks.check_covariance returns it. Returns 0 when
 * a has a NaN or inf, or max |a - a^T| > tol * max |a| (check_covariance's rules). */
static int N_(mvn_load)(const T *a, int64_t d, double tol, double *c) {
    double scale = 0.0, asym = 0.0;
    int finite = 1;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            const double x = (double)a[i * d + j], y = (double)a[j * d + i];
            const double ax = fabs(x), ay = fabs(y), dxy = fabs(x - y);
            finite &= (x - x == 0.0) & (y - y == 0.0);    /* no NaN or inf */
            scale = ax > scale ? ax : scale;               /* not fmax: a libm call */
            scale = ay > scale ? ay : scale;
            asym = dxy > asym ? dxy : asym;
            c[i * d + j] = c[j * d + i] = 0.5 * (x + y);
        }
    return finite && !(asym > tol * scale);
}

/* Lower Cholesky factor of a, in place (upper triangle zeroed); 0 when a is not
 * positive definite (a pivot <= 0, as LAPACK's potrf). */
static int N_(mvn_chol)(double *a, int64_t d) {
    for (int64_t j = 0; j < d; j++) {
        double *rj = a + j * d;
        double s = rj[j];
        for (int64_t k = 0; k < j; k++) s -= rj[k] * rj[k];
        if (!(s > 0.0)) return 0;
        s = sqrt(s);
        rj[j] = s;
        const double inv = 1.0 / s;    /* one division per column, as LAPACK's potf2 */
        for (int64_t i = j + 1; i < d; i++) {
            double *ri = a + i * d;
            double t = ri[j];
            for (int64_t k = 0; k < j; k++) t -= ri[k] * rj[k];
            ri[j] = t * inv;
        }
        for (int64_t k = j + 1; k < d; k++) rj[k] = 0.0;
    }
    return 1;
}

/* x = L^-1 b for lower-triangular L and b (b NULL: the identity); x is lower triangular. */
static void N_(mvn_solve)(const double *L, const double *b, int64_t d, double *x) {
    for (int64_t i = 0; i < d; i++) {
        double *xi = x + i * d;
        for (int64_t c = 0; c < d; c++) xi[c] = c > i ? 0.0 : b ? b[i * d + c] : (double)(c == i);
        for (int64_t k = 0; k < i; k++) {
            const double l = L[i * d + k], *xk = x + k * d;
            for (int64_t c = 0; c <= k; c++) xi[c] -= l * xk[c];
        }
        for (int64_t c = 0; c <= i; c++) xi[c] /= L[i * d + i];
    }
}

/* g = x^T y for lower-triangular x and y: sums of outer products of their rows. */
static void N_(mvn_gram)(const double *x, const double *y, int64_t d, double *g) {
    for (int64_t c = 0; c < d * d; c++) g[c] = 0.0;
    for (int64_t k = 0; k < d; k++)
        for (int64_t i = 0; i <= k; i++) {
            const double xi = x[k * d + i];
            double *gi = g + i * d;
            for (int64_t j = 0; j <= k; j++) gi[j] += xi * y[k * d + j];
        }
}

/* scale * src (n values) into gradient k of out (if wanted), batch element e. */
static void N_(mvn_store)(const fl_mvn_out *out, int k, int64_t e, const double *src, double scale,
                          int64_t n) {
    if (!out->g[k]) return;
    if (out->wide[k]) {
        double *dst = (double *)out->g[k] + e * n;
        for (int64_t c = 0; c < n; c++) dst[c] = scale * src[c];
    } else {
        T *dst = (T *)out->g[k] + e * n;
        for (int64_t c = 0; c < n; c++) dst[c] = (T)(scale * src[c]);
    }
}

/* The KL of one pair into *loss and, when out is given, its gradients scaled by
 * gscale into batch element e of out. tol_p / tol_q: the symmetry tolerances
 * (64 eps of the covariance's own dtype). Returns 0, or 1 / 2 when cov_p / cov_q
 * is not finite, symmetric and positive definite (nothing written). scratch:
 * fl_mvn_scratch(d) doubles. */
static int N_(mvn_kl_one)(const T *mp, const T *sp, const T *mq, const T *sq, int64_t d, double tol_p,
                          double tol_q, double gscale, const fl_mvn_out *out, int64_t e, double *loss,
                          double *scratch) {
    const int64_t dd = d * d;
    double *Lp = scratch, *Lq = Lp + dd, *M = Lq + dd, *Wq = M + dd, *Wp = Wq + dd;
    double *Sqi = Wp + dd, *Spi = Sqi + dd, *Bm = Spi + dd;
    double *delta = Bm + dd, *z = delta + d, *alpha = z + d;
    if (!N_(mvn_load)(sp, d, tol_p, Lp) || !N_(mvn_chol)(Lp, d)) return 1;
    if (!N_(mvn_load)(sq, d, tol_q, Lq) || !N_(mvn_chol)(Lq, d)) return 2;
    int has_inf = 0, has_nan = 0;
    for (int64_t i = 0; i < d; i++) {
        delta[i] = (double)mp[i] - (double)mq[i];
        has_inf |= isinf(delta[i]) != 0;
        has_nan |= isnan(delta[i]) != 0;
    }
    N_(mvn_solve)(Lq, Lp, d, M);
    double tr = 0.0, maha = 0.0, logdet_q = 0.0, logdet_p = 0.0;
    for (int64_t c = 0; c < dd; c++) tr += M[c] * M[c];
    for (int64_t i = 0; i < d; i++) {
        double t = delta[i];
        for (int64_t k = 0; k < i; k++) t -= Lq[i * d + k] * z[k];
        z[i] = t / Lq[i * d + i];
        maha += z[i] * z[i];
        logdet_q += log(Lq[i * d + i]);
        logdet_p += log(Lp[i * d + i]);
    }
    /* An infinite mean difference: the Mahalanobis term is +inf (a positive definite
     * form), where the triangular solve gives inf - inf = NaN. */
    *loss = has_inf && !has_nan ? INFINITY : 0.5 * (tr + maha - (double)d) + (logdet_q - logdet_p);
    if (!out) return 0;
    N_(mvn_solve)(Lq, NULL, d, Wq);
    N_(mvn_solve)(Lp, NULL, d, Wp);
    N_(mvn_gram)(Wq, Wq, d, Sqi);
    N_(mvn_gram)(Wp, Wp, d, Spi);
    N_(mvn_gram)(Wq, M, d, Bm);
    for (int64_t i = 0; i < d; i++) {          /* alpha = Lq^-T z; NaN for any non-finite mean */
        double t = 0.0;
        for (int64_t k = i; k < d; k++) t += Wq[k * d + i] * z[k];
        alpha[i] = has_inf || has_nan ? NAN : t;
    }
    for (int64_t c = 0; c < dd; c++) Spi[c] = Sqi[c] - Spi[c];
    for (int64_t i = 0; i < d; i++)            /* symmetric: the lower triangle, mirrored */
        for (int64_t j = 0; j <= i; j++) {
            double bb = 0.0;
            for (int64_t k = 0; k < d; k++) bb += Bm[i * d + k] * Bm[j * d + k];
            Sqi[i * d + j] = Sqi[j * d + i] = Sqi[i * d + j] - bb - alpha[i] * alpha[j];
        }
    N_(mvn_store)(out, 0, e, alpha, gscale, d);
    N_(mvn_store)(out, 1, e, Spi, 0.5 * gscale, dd);
    N_(mvn_store)(out, 2, e, alpha, -gscale, d);
    N_(mvn_store)(out, 3, e, Sqi, 0.5 * gscale, dd);
    return 0;
}
