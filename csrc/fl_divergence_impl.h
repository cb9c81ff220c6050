/* Template body (see fl_instantiate.h): divergences between softmax rows
 * (entropy, KL, Jensen-Shannon) and the elementwise Gaussian losses (diagonal
 * Gaussian KL, VAE reconstruction, Gaussian NLL).
 *
 * Softmax rows are C-contiguous, C elements each, and are handled one row pair
 * at a time while it is hot in cache: pass 1 takes both maxima, pass 2 the
 * exponentials (kept in per-thread scratch), their sums and the divergence,
 * pass 3 both gradients. A gradient may alias any input row: pass 3 reads an
 * element of both inputs before it writes that element of either gradient.
 *
 * A class with probability 0 (logit -inf, or an exponential that underflows)
 * contributes exactly 0 (0 * log 0 = 0), selected by `e == 0`; a NaN logit
 * makes its row's maximum NaN, so the whole row (loss and gradient) is NaN. */

/* v, with the lanes where `m` is set replaced by 0. */
FL_INL V N_(dv_zero_if)(VI m, V v) { return N_(vsel)(m, N_(vset1)((T)0), v); }

/* Max of a row (NaN wins). */
static T N_(dv_max)(const T *x, int64_t C) {
    V vm = N_(vset1)(-(T)INFINITY);
    int64_t k = 0;
    for (; k + W <= C; k += W) vm = N_(vmax_nan)(vm, N_(vload)(x + k));
    if (k < C) vm = N_(vmax_nan)(vm, N_(vload_part)(x + k, C - k, -(T)INFINITY));
    return N_(vhmax_nan)(vm);
}

/* Entropy H = -sum p log p of softmax rows, into loss[r]. With z = x - max,
 * e = exp(z), s = sum e, t = sum e z:  H = log s - t / s and
 * dH/dx_j = -p_j (log p_j + H) = -(e_j / s) (z_j - t / s).
 * g (optional) gets the gradient of gscale * sum_r H_r. scratch: NULL or C elements. */
static void N_(entropy_rows)(const T *x, T *g, int64_t n, int64_t C, double gscale,
                             double *loss, T *scratch) {
    for (int64_t r = 0; r < n; r++) {
        const T *xr = x + r * C;
        T *gr = g ? g + r * C : NULL;
        const T m = N_(dv_max)(xr, C);
        double s = 0.0, t = 0.0;
        for (int64_t b = 0; b < C; b += FL_DIV_SUM_BLOCK) {
            const int64_t end = b + FL_DIV_SUM_BLOCK < C ? b + FL_DIV_SUM_BLOCK : C;
            V as = N_(vset1)(0), at = N_(vset1)(0);
            for (int64_t k = b; k < end; k += W) {
                const int64_t nk = end - k;
                V z = N_(vload_n)(xr + k, nk, -(T)INFINITY) - m;
                V e = N_(vexp)(z);
                if (scratch) N_(vstore_n)(scratch + k, e, nk);
                as += e;
                at += N_(dv_zero_if)(e == (T)0, e * z);
            }
            s += N_(vhsum)(as);
            t += N_(vhsum)(at);
        }
        const double ts = t / s;
        loss[r] = log(s) - ts;
        if (!gr) continue;
        const T c = (T)(-gscale / s), tsT = (T)ts;
        for (int64_t k = 0; k < C; k += W) {
            const int64_t nk = C - k;
            V z = N_(vload_n)(xr + k, nk, 0) - m;
            V e = scratch ? N_(vload_n)(scratch + k, nk, 0) : N_(vexp)(z);
            N_(vstore_n)(gr + k, N_(dv_zero_if)(e == (T)0, e * (z - tsT)) * c, nk);
        }
    }
}

/* Skipped row (label == ignore_index): loss 0, gradient 0 (q's left alone when
 * accumulating). Returns 1 when the row is skipped. */
static int N_(dv_skip_row)(const fl_div_params *p, int64_t r, T *gar, T *gbr, double *loss) {
    if (!p->labels || p->labels[r] != p->ignore_index) return 0;
    loss[r] = 0.0;
    if (gar) memset(gar, 0, (size_t)p->C * sizeof(T));
    if (gbr && !p->accumulate_q) memset(gbr, 0, (size_t)p->C * sizeof(T));
    return 1;
}

/* KL(softmax(a / T) || softmax(b / T)) per row, into loss[r]. With
 * za = (a - max a) / T, zb likewise, ea = exp(za), sa = sum ea (and b's),
 * d = za - zb and c = sum ea d / sa (= sum_k p_k (za_k - zb_k)):
 *   KL = c - log sa + log sb,
 *   dKL/dza_j = p_j (log p_j - log q_j - KL) = (ea_j / sa) (d_j - c),
 *   dKL/dzb_j = q_j - p_j.
 * ga / gb (either may be NULL) get those times gscale_p / gscale_q (which carry
 * the 1 / T of the chain rule and the reduction); with accumulate_q, gb is
 * added to. Where q has no mass on p's support, d = +inf and KL = +inf.
 * scratch: NULL or 2 C elements. */
static void N_(kl_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n,
                        const fl_div_params *p, double *loss, T *scratch) {
    const int64_t C = p->C;
    const T it = (T)p->inv_t;
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        if (N_(dv_skip_row)(p, r, gar, gbr, loss)) continue;
        const T ma = N_(dv_max)(ar, C), mb = N_(dv_max)(br, C);
        double sa = 0.0, sb = 0.0, t = 0.0;
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0), acc_t = N_(vset1)(0);
            for (int64_t k = k0; k < end; k += W) {
                const int64_t nk = end - k;
                V za = (N_(vload_n)(ar + k, nk, -(T)INFINITY) - ma) * it;
                V zb = (N_(vload_n)(br + k, nk, -(T)INFINITY) - mb) * it;
                V ea = N_(vexp)(za), eb = N_(vexp)(zb);
                if (scratch) {
                    N_(vstore_n)(sa_buf + k, ea, nk);
                    N_(vstore_n)(sb_buf + k, eb, nk);
                }
                acc_a += ea;
                acc_b += eb;
                acc_t += N_(dv_zero_if)(ea == (T)0, ea * (za - zb));
            }
            sa += N_(vhsum)(acc_a);
            sb += N_(vhsum)(acc_b);
            t += N_(vhsum)(acc_t);
        }
        const double c = t / sa;
        loss[r] = c - log(sa) + log(sb);
        if (!gar && !gbr) continue;
        const T cT = (T)c, ra = (T)(1.0 / sa), rb = (T)(1.0 / sb);
        const T gpa = (T)(p->gscale_p / sa), gq = (T)p->gscale_q;
        for (int64_t k = 0; k < C; k += W) {
            const int64_t nk = C - k;
            V za = (N_(vload_n)(ar + k, nk, 0) - ma) * it;
            V zb = (N_(vload_n)(br + k, nk, 0) - mb) * it;
            V ea = scratch ? N_(vload_n)(sa_buf + k, nk, 0) : N_(vexp)(za);
            V eb = scratch ? N_(vload_n)(sb_buf + k, nk, 0) : N_(vexp)(zb);
            if (gar) N_(vstore_n)(gar + k, N_(dv_zero_if)(ea == (T)0, ea * (za - zb - cT)) * gpa, nk);
            if (gbr) {
                V gk = (eb * rb - ea * ra) * gq;
                if (p->accumulate_q) gk += N_(vload_n)(gbr + k, nk, 0);
                N_(vstore_n)(gbr + k, gk, nk);
            }
        }
    }
}

/* Generalised Jensen-Shannon divergence per row, into loss[r]:
 *   JS = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,
 * p = softmax(a / T), q = softmax(b / T). With u = log p - log m, v = log q - log m,
 * Kp = sum p u, Kq = sum q v:
 *   dJS/dza_j = beta p_j (u_j - Kp),  dJS/dzb_j = (1 - beta) q_j (v_j - Kq).
 * beta = 0 or 1 makes m equal one side: JS is exactly 0 (NaN for a NaN row).
 * scratch: NULL or 3 C elements (ea, eb, log m). */
static void N_(js_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n,
                        const fl_div_params *p, double *loss, T *scratch) {
    const int64_t C = p->C;
    const T it = (T)p->inv_t;
    const double beta = p->beta;
    const T bp = (T)beta, bq = (T)(1.0 - beta);
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL, *lm_buf = scratch ? scratch + 2 * C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        const T ma = N_(dv_max)(ar, C), mb = N_(dv_max)(br, C);
        if (!(beta > 0.0 && beta < 1.0)) {
            /* m is p (or q): the divergence vanishes; keep NaN rows NaN */
            const T z = (T)(((double)ma - (double)ma) + ((double)mb - (double)mb));
            loss[r] = (double)z;
            for (int64_t k = 0; k < C; k++) {
                if (gar) gar[k] = z;
                if (gbr) gbr[k] = z;
            }
            continue;
        }
        double sa = 0.0, sb = 0.0;
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0);
            for (int64_t k = k0; k < end; k += W) {
                const int64_t nk = end - k;
                V ea = N_(vexp)((N_(vload_n)(ar + k, nk, -(T)INFINITY) - ma) * it);
                V eb = N_(vexp)((N_(vload_n)(br + k, nk, -(T)INFINITY) - mb) * it);
                if (scratch) {
                    N_(vstore_n)(sa_buf + k, ea, nk);
                    N_(vstore_n)(sb_buf + k, eb, nk);
                }
                acc_a += ea;
                acc_b += eb;
            }
            sa += N_(vhsum)(acc_a);
            sb += N_(vhsum)(acc_b);
        }
        const T ra = (T)(1.0 / sa), rb = (T)(1.0 / sb);
        const T la = (T)log(sa), lb = (T)log(sb);
        double kp = 0.0, kq = 0.0;
        for (int64_t k0 = 0; k0 < C; k0 += FL_DIV_SUM_BLOCK) {
            const int64_t end = k0 + FL_DIV_SUM_BLOCK < C ? k0 + FL_DIV_SUM_BLOCK : C;
            V acc_p = N_(vset1)(0), acc_q = N_(vset1)(0);
            for (int64_t k = k0; k < end; k += W) {
                const int64_t nk = end - k;
                V za = (N_(vload_n)(ar + k, nk, -(T)INFINITY) - ma) * it;
                V zb = (N_(vload_n)(br + k, nk, -(T)INFINITY) - mb) * it;
                V ea = scratch ? N_(vload_n)(sa_buf + k, nk, 0) : N_(vexp)(za);
                V eb = scratch ? N_(vload_n)(sb_buf + k, nk, 0) : N_(vexp)(zb);
                V lm = N_(vlog)(bp * (ea * ra) + bq * (eb * rb));
                if (scratch) N_(vstore_n)(lm_buf + k, lm, nk);
                acc_p += N_(dv_zero_if)(ea == (T)0, ea * (za - la - lm));
                acc_q += N_(dv_zero_if)(eb == (T)0, eb * (zb - lb - lm));
            }
            kp += N_(vhsum)(acc_p);
            kq += N_(vhsum)(acc_q);
        }
        kp /= sa;
        kq /= sb;
        loss[r] = beta * kp + (1.0 - beta) * kq;
        if (!gar && !gbr) continue;
        const T kpT = (T)kp, kqT = (T)kq;
        const T gpa = (T)(p->gscale_p * beta / sa), gqb = (T)(p->gscale_q * (1.0 - beta) / sb);
        for (int64_t k = 0; k < C; k += W) {
            const int64_t nk = C - k;
            V za = (N_(vload_n)(ar + k, nk, 0) - ma) * it;
            V zb = (N_(vload_n)(br + k, nk, 0) - mb) * it;
            V ea, eb, lm;
            if (scratch) {
                ea = N_(vload_n)(sa_buf + k, nk, 0);
                eb = N_(vload_n)(sb_buf + k, nk, 0);
                lm = N_(vload_n)(lm_buf + k, nk, 0);
            } else {
                ea = N_(vexp)(za);
                eb = N_(vexp)(zb);
                lm = N_(vlog)(bp * (ea * ra) + bq * (eb * rb));
            }
            if (gar) N_(vstore_n)(gar + k, N_(dv_zero_if)(ea == (T)0, ea * (za - la - lm - kpT)) * gpa, nk);
            if (gbr) N_(vstore_n)(gbr + k, N_(dv_zero_if)(eb == (T)0, eb * (zb - lb - lm - kqT)) * gqb, nk);
        }
    }
}

/* Diagonal Gaussian KL(N(mp, exp(lvp)) || N(mq, exp(lvq))) over n elements:
 *   l = 0.5 (lvq - lvp + r + (mp - mq)^2 / vq - 1),  r = exp(lvp - lvq), 1 / vq = exp(-lvq),
 *   dl/dmp = (mp - mq) / vq = -dl/dmq,  dl/dlvp = 0.5 (r - 1),
 *   dl/dlvq = 0.5 (1 - r - (mp - mq)^2 / vq).
 * mq / lvq NULL: 0 (the standard normal). Gradients (each optional) are scaled
 * by gscale; lelem (optional) gets the per-element loss. Returns sum l (float64
 * over blocks of FL_DIV_SUM_BLOCK). */
static double N_(gauss_kl_block)(const T *mp, const T *lvp, const T *mq, const T *lvq,
                                 T *gmp, T *glvp, T *gmq, T *glvq, T *lelem, int64_t n, T gscale) {
    double total = 0.0;
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
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
            if (nk < W) l = N_(vsel)(N_(vfirst)(nk), l, N_(vset1)(0));
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gmp) N_(vstore_n)(gmp + k, gm * gscale, nk);
            if (glvp) N_(vstore_n)(glvp + k, (rr - (T)1) * hg, nk);
            if (gmq) N_(vstore_n)(gmq + k, gm * -gscale, nk);
            if (glvq) N_(vstore_n)(glvq + k, ((T)1 - rr - dm2) * hg, nk);
        }
        total += N_(vhsum)(acc);
    }
    return total;
}

/* Reconstruction loss over n elements: mode 0: (r - x)^2, gradient 2 (r - x);
 * mode 1: binary cross-entropy with logits r, l = max(r, 0) - r x + log1p(exp(-|r|)),
 * gradient sigmoid(r) - x. Gradient (optional) scaled by gscale; lelem optional.
 * Returns sum l in float64. */
static double N_(recon_block)(const T *r, const T *x, int mode, T *g, T *lelem, int64_t n, T gscale) {
    double total = 0.0;
    const T g2 = (T)2 * gscale;
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            const int64_t nk = end - k;
            V rk = N_(vload_n)(r + k, nk, 0), xk = N_(vload_n)(x + k, nk, 0);
            V l, gk;
            if (mode == 0) {
                V d = rk - xk;
                l = d * d;
                gk = d * g2;
            } else {
                VI neg = rk < (T)0;
                V e = N_(vexp)(N_(vsel)(neg, rk, -rk));          /* exp(-|r|) in (0, 1] */
                V inv = (T)1 / ((T)1 + e);
                V sig = N_(vsel)(neg, e * inv, inv);              /* sigmoid(r) */
                l = N_(vsel)(neg, N_(vset1)(0), rk) - rk * xk + N_(vlog1p)(e);
                gk = (sig - xk) * gscale;
                if (nk < W) l = N_(vsel)(N_(vfirst)(nk), l, N_(vset1)(0));
            }
            acc += l;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (g) N_(vstore_n)(g + k, gk, nk);
        }
        total += N_(vhsum)(acc);
    }
    return total;
}

/* PyTorch's Gaussian negative log-likelihood over n elements, v = max(var, eps):
 *   l = 0.5 (log v + (x - t)^2 / v) + cst,
 *   dl/dx = (x - t) / v,  dl/dvar = 0.5 (1 / v - (x - t)^2 / v^2)
 * (the clamp passes the gradient straight through, as PyTorch's no-grad clamp).
 * var NULL: every element uses vconst, and *gv_sum (if given) gets sum dl/dvar
 * times gscale in float64 (a per-row variance). Gradients optional, scaled by gscale. */
static double N_(nll_block)(const T *x, const T *t, const T *var, T vconst, T *gx, T *gv,
                            T *lelem, int64_t n, T eps, T cst, T gscale, double *gv_sum) {
    double total = 0.0, gvs = 0.0;
    const T half = (T)0.5, hg = (T)0.5 * gscale;
    const V vc = N_(vset1)(vconst < eps ? eps : vconst);  /* NaN stays NaN */
    const V lvc = N_(vlog)(vc);
    for (int64_t b = 0; b < n; b += FL_DIV_SUM_BLOCK) {
        const int64_t end = b + FL_DIV_SUM_BLOCK < n ? b + FL_DIV_SUM_BLOCK : n;
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
            if (nk < W) {
                VI keep = N_(vfirst)(nk);
                l = N_(vsel)(keep, l, N_(vset1)(0));
                gvk = N_(vsel)(keep, gvk, N_(vset1)(0));
            }
            acc += l;
            if (gv_sum) accg += gvk;
            if (lelem) N_(vstore_n)(lelem + k, l, nk);
            if (gx) N_(vstore_n)(gx + k, gxk * gscale, nk);
            if (gv) N_(vstore_n)(gv + k, gvk, nk);
        }
        total += N_(vhsum)(acc);
        if (gv_sum) gvs += N_(vhsum)(accg);
    }
    if (gv_sum) *gv_sum = gvs;
    return total;
}
