/* Template body (see fl_instantiate.h): the elementwise Gaussian losses
 * (diagonal Gaussian KL, VAE reconstruction, Gaussian NLL) over flat arrays.
 * Each block function returns its float64 sum, formed from partial sums of
 * FL_SUM_BLOCK elements in the row dtype (fl_vec.h's VD). */

#include "fl_pointwise.h"

/* Diagonal Gaussian KL(N(mp, exp(lvp)) || N(mq, exp(lvq))) over n elements:
 *   l = 0.5 (lvq - lvp + r + (mp - mq)^2 / vq - 1),  r = exp(lvp - lvq), 1 / vq = exp(-lvq),
 *   dl/dmp = (mp - mq) / vq = -dl/dmq,  dl/dlvp = 0.5 (r - 1),
 *   dl/dlvq = 0.5 (1 - r - (mp - mq)^2 / vq).
 * mq / lvq NULL: 0 (the standard normal). Gradients (each optional) are scaled
 * by gscale; lelem (optional) gets the per-element loss. Returns sum l (float64
 * over blocks of FL_SUM_BLOCK). */
static double N_(gauss_kl_block)(const T *mp, const T *lvp, const T *mq, const T *lvq,
                                 T *gmp, T *glvp, T *gmq, T *glvq, T *lelem, int64_t n, T gscale) {
    VD total = N_(dv_dzero)();
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
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
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gmp) N_(vstore_n)(gmp + k, gm * gscale, nk);
            if (glvp) N_(vstore_n)(glvp + k, (rr - (T)1) * hg, nk);
            if (gmq) N_(vstore_n)(gmq + k, gm * -gscale, nk);
            if (glvq) N_(vstore_n)(glvq + k, ((T)1 - rr - dm2) * hg, nk);
        }
        total = N_(dv_widen_add)(total, acc);
    }
    return N_(dv_dsum)(total);
}

/* Reconstruction loss over n elements of recon r and data x: mode 0: squared error
 * (r - x)^2 (sqerr_point), mode 1: binary cross-entropy with logits r and targets x
 * (bce_logits_point, no positive weight), the same per-element values as mse_loss and
 * binary_cross_entropy_with_logits. Gradient (optional) scaled by gscale; lelem optional.
 * Returns sum l in float64. */
static double N_(recon_block)(const T *r, const T *x, int mode, T *g, T *lelem, int64_t n, T gscale) {
    VD total = N_(dv_dzero)();
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V rk = N_(vload_n)(r + k, nk, 0), xk = N_(vload_n)(x + k, nk, 0);
            V l, gk;
            if (mode == 0) {
                N_(sqerr_point)(rk - xk, &l, &gk);     /* padded lanes: l = 0 */
            } else {
                N_(bce_logits_point)(rk, xk, NULL, nk, &l, &gk);
                l = N_(vkeep_first)(l, nk);
            }
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (g) N_(vstore_n)(g + k, gk * gscale, nk);
        }
        total = N_(dv_widen_add)(total, acc);
    }
    return N_(dv_dsum)(total);
}

/* PyTorch's Gaussian negative log-likelihood over n elements, v = max(var, eps):
 *   l = 0.5 (log v + (x - t)^2 / v) + cst,
 *   dl/dx = (x - t) / v,  dl/dvar = 0.5 (1 / v - (x - t)^2 / v^2)
 * (the clamp passes the gradient straight through, as PyTorch's no-grad clamp).
 * var NULL: every element uses vconst, and *gv_sum (if given) gets sum dl/dvar
 * times gscale in float64 (a per-row variance). Gradients optional, scaled by gscale. */
static double N_(nll_block)(const T *x, const T *t, const T *var, T vconst, T *gx, T *gv,
                            T *lelem, int64_t n, T eps, T cst, T gscale, double *gv_sum) {
    VD total = N_(dv_dzero)(), gvs = total;
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    const V vc = N_(vset1)(vconst < eps ? eps : vconst);  /* NaN stays NaN */
    const V lvc = N_(vlog)(vc);
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0), accg = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V d = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(t + k, nk, 0);
            V v, lv;
            if (var) {
                v = N_(vload_n)(var + k, nk, 1);
                v = N_(vsel)(v < eps, N_(vset1)(eps), v);
                lv = N_(vlog)(v);
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
            acc += l;
            if (gv_sum) accg += gvk;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gx) N_(vstore_n)(gx + k, gxk * gscale, nk);
            if (gv) N_(vstore_n)(gv + k, gvk, nk);
        }
        total = N_(dv_widen_add)(total, acc);
        if (gv_sum) gvs = N_(dv_widen_add)(gvs, accg);
    }
    if (gv_sum) *gv_sum = N_(dv_dsum)(gvs);
    return N_(dv_dsum)(total);
}
