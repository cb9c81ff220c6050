/* Template body (see fl_instantiate.h): divergences between softmax rows
 * (entropy, KL, Jensen-Shannon).
 *
 * Rows are C-contiguous, C elements each, and are handled one row pair
 * at a time while it is hot in cache: pass 1 takes both maxima, pass 2 the
 * exponentials and what the gradients need (kept in per-thread scratch), their
 * sums and the divergence, the last pass writes both gradients from the scratch
 * alone. A gradient may alias any input row: once the gradient pass starts, no
 * input is read again (rows too long for the scratch recompute from the inputs,
 * reading each element of both before writing it). Rows of at most FL_MID_C classes
 * run W rows at a time instead: transposed up to FL_SMALL_C (entropy_small, kl_small,
 * js_small), each step across the block's rows above (entropy_mid, kl_mid, js_mid).
 *
 * A class with probability 0 (logit -inf, or an exponential that underflows)
 * contributes exactly 0 (0 * log 0 = 0), selected by `e == 0`. A row whose
 * maximum is not finite (a NaN or +inf logit, or all -inf) is no distribution:
 * its loss and gradient are NaN, and every other row has shifted logits in
 * [-inf, 0], which is all vexp_le0 handles. Float64 partial sums: fl_vec.h's VD. */

/* a * b + c, fused (one rounding) on the levels that have FMA, via the intrinsic:
 * GCC's contraction of a plain a * b + c depends on the surrounding code, and the
 * row writer must round alike on its aligned, unaligned and partial paths. */
FL_INL V N_(dv_fma)(V a, V b, V c) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return (V)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return (V)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    return (V)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return (V)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;      /* baseline x86-64 has no FMA: never contracted */
#endif
}

/* One vector of the row writer below, at offset k, n <= W lanes. */
FL_INL V N_(dv_write_vec)(const T *X, const T *Z, const T *Y, T s1, T s0, T sy, const T *E,
                          T se, int64_t k, int64_t n) {
    V x = N_(vload_n)(X + k, n, 0);
    V v = N_(dv_fma)(x, N_(vset1)(s1), Z ? -N_(vload_n)(Z + k, n, 0) : N_(vset1)(s0));
    v *= Y ? N_(vload_n)(Y + k, n, 0) : N_(vset1)(sy);
    return E ? N_(dv_fma)(N_(vload_n)(E + k, n, 0), N_(vset1)(se), v) : v;
}

/* g[k] = (X[k] s1 - Z[k]) Y[k]  (Z NULL: X[k] s1 + s0; Y NULL: times sy), plus E[k] se
 * if E, for k < C: the gradient pass of every softmax-row kernel, over rows held in
 * scratch. With stream, the aligned middle of the row goes out with streaming stores
 * (the caller fences). */
static void N_(dv_write_row)(T *g, int64_t C, const T *X, const T *Z, const T *Y, T s1, T s0,
                             T sy, const T *E, T se, int stream) {
#define FL_WRITE_VEC(k, n) N_(dv_write_vec)(X, Z, Y, s1, s0, sy, E, se, k, n)
    int64_t k = 0;
    if (FL_X86_DISPATCH && stream && ((uintptr_t)g % sizeof(T)) == 0) {
        int64_t h = (int64_t)(((FL_VBYTES - (uintptr_t)g % FL_VBYTES) % FL_VBYTES) / sizeof(T));
        if (h > C) h = C;
        if (h > 0) N_(vstore_part)(g, FL_WRITE_VEC(0, h), h);
        for (k = h; k + W <= C; k += W) N_(vstream)(g + k, FL_WRITE_VEC(k, W));
    } else {
        for (; k + W <= C; k += W) N_(vstore)(g + k, FL_WRITE_VEC(k, W));
    }
    if (k < C) N_(vstore_part)(g + k, FL_WRITE_VEC(k, C - k), C - k);
#undef FL_WRITE_VEC
}

/* v, with the lanes where `m` is set replaced by 0. */
FL_INL V N_(dv_zero_if)(VI m, V v) { return N_(vsel)(m, N_(vset1)((T)0), v); }

/* Maxima of two rows (NaN wins), and with am_a (or NULL) the rows' argmaxes into *am_a,
 * *am_b while the rows are in cache. */
static void N_(dv_max2_at)(const T *a, const T *b, int64_t C, T *ma, T *mb, int64_t *am_a,
                           int64_t *am_b) {
    *ma = N_(row_max)(a, C);
    *mb = N_(row_max)(b, C);
    if (!am_a) return;
    *am_a = N_(row_find)(a, C, *ma);
    *am_b = N_(row_find)(b, C, *mb);
}

/* A row whose maximum is NaN, +inf or -inf (no distribution): loss and gradients NaN. */
static int N_(dv_bad_row)(T m1, T m2, int64_t C, double *loss, T *g1, T *g2) {
    if (m1 > -(T)INFINITY && m1 < (T)INFINITY && m2 > -(T)INFINITY && m2 < (T)INFINITY) return 0;
    *loss = NAN;
    for (int64_t k = 0; k < C; k++) {
        if (g1) g1[k] = (T)NAN;
        if (g2) g2[k] = (T)NAN;
    }
    return 1;
}

/* Entropy H = -sum p log p of softmax rows, into loss[r]. With z = x - max,
 * e = exp(z), s = sum e, t = sum e z:  H = log s - t / s and
 * dH/dx_j = -p_j (log p_j + H) = -(e_j / s) (z_j - t / s).
 * g (optional) gets the gradient of gscale * sum_r H_r. scratch: NULL or 2 C
 * elements (e and z, z zeroed where e == 0); without it the gradient pass recomputes.
 *
 * Loops of every row kernel run over whole vectors with plain local accumulators;
 * the partial vector at the row's end is handled after them (a tail inside the
 * loop makes GCC keep the accumulators in memory). */
typedef struct { V e, z; } N_(ent_v);
FL_INL N_(ent_v) N_(ent_vec_v)(V x, V m) {
    N_(ent_v) o;
    V z = x - m;
    o.e = N_(vexp_le0)(z);
    o.z = N_(dv_zero_if)(o.e == (T)0, z);
    return o;
}
FL_INL N_(ent_v) N_(ent_vec)(V x, T m) { return N_(ent_vec_v)(x, N_(vset1)(m)); }

/* The rows of a transposed block (block_load_t) whose max is finite and who hold no NaN:
 * ma and mb their maxima (vmax_nan), lanes past the rows count as finite. */
FL_INL VI N_(dv_fin2)(V ma, V mb) {
    return (ma > -(T)INFINITY) & (ma < (T)INFINITY) & (mb > -(T)INFINITY) & (mb < (T)INFINITY);
}
/* A row's lane of a transposed block: NaN where the row is no distribution (fin clear), 0
 * where it is skipped (a label equal to ignore_index), as kl_row_path and js_row_path make
 * those rows. */
FL_INL V N_(dv_fix_lanes)(V v, VI fin, VI skip) {
    return N_(vsel)(skip, N_(vset1)(0), N_(vsel)(fin, v, N_(vset1)((T)NAN)));
}
FL_INL VD N_(dv_fix_lanes_d)(VD v, VI fin, VI skip) {
    for (int j = 0; j < W; j++) v[j] = skip[j] ? 0.0 : fin[j] ? v[j] : NAN;
    return v;
}

/* One row of entropy_rows (its loss into *loss; gr: NULL or its gradient). */
static void N_(entropy_row)(const T *xr, T *gr, int64_t C, double gscale, double *loss,
                            T *scratch, int stream, const T *next) {
    T *se = scratch, *sz = scratch ? scratch + C : NULL;
    const int64_t Cv = C - C % W, nt = C - Cv;
    const T m = N_(row_max)(xr, C);
    if (N_(dv_bad_row)(m, 0, C, loss, gr, NULL)) return;
    VD vs = N_(dv_dzero)(), vt = vs;
    N_(ent_v) o;
    for (int64_t b = 0; b < Cv; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < Cv ? b + FL_SUM_BLOCK : Cv;
        V as = N_(vset1)(0), at = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            FL_PREFETCH(next, k, 0);       /* the next row streams in meanwhile */
            o = N_(ent_vec)(N_(vload)(xr + k), m);
            as += o.e;
            at += o.e * o.z;
            if (scratch) {
                N_(vstore)(se + k, o.e);
                N_(vstore)(sz + k, o.z);
            }
        }
        vs = N_(dv_widen_add)(vs, as);
        vt = N_(dv_widen_add)(vt, at);
    }
    if (nt) {
        o = N_(ent_vec)(N_(vload_part)(xr + Cv, nt, -(T)INFINITY), m);
        vs = N_(dv_widen_add)(vs, o.e);
        vt = N_(dv_widen_add)(vt, o.e * o.z);
        if (scratch) {
            N_(vstore_part)(se + Cv, o.e, nt);
            N_(vstore_part)(sz + Cv, o.z, nt);
        }
    }
    const double s = N_(dv_dsum)(vs), ts = N_(dv_dsum)(vt) / s;
    *loss = log(s) - ts;
    if (!gr) return;
    /* g = (z - ts) e (-gscale / s) */
    const T c = (T)(-gscale / s), cts = (T)(gscale * ts / s);
    if (scratch) {
        N_(dv_write_row)(gr, C, sz, NULL, se, c, cts, 0, NULL, 0, stream);
        return;
    }
    for (int64_t k = 0; k < C; k += W) {
        const int64_t nk = C - k < W ? C - k : W;
        o = N_(ent_vec)(N_(vload_n)(xr + k, nk, -(T)INFINITY), m);
        N_(vstore_n)(gr + k, N_(dv_fma)(o.z, N_(vset1)(c), N_(vset1)(cts)) * o.e, nk);
    }
}

/* entropy_rows for rows of at most FL_MID_C classes, in blocks of nr <= W rows, each
 * step across the block's rows, as cross-entropy's blocked row path
 * (fl_classification_impl.h): block_max, each row's sums of e and e z in T (at most
 * FL_SUM_BLOCK terms, as entropy_row's blocks), the W rows' sums one transposition each
 * (vrows_sum) and their logs one vlog, where a row's fixed costs (a horizontal max, float64
 * lane sums, libm's log) were most of a short row's time. The gradient pass recomputes e and
 * z from x, still in L1; each row reads and writes only itself, so g may be x. Rows holding
 * a NaN or whose max is not finite (or whose sum overflowed) take entropy_row. */
static void N_(entropy_mid)(const T *x, T *g, int64_t n, int64_t C, double gscale,
                            double *loss) {
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *xb = x + r0 * C;
        VI fin;
        const V m = N_(block_max)(xb, nr, C, &fin);
        V sv[W], tv[W];
        for (int j = 0; j < W; j++) {
            V as = N_(vset1)(0), at = N_(vset1)(0);
            for (int64_t k = 0; j < nr && fin[j] && k < C; k += W) {
                FL_PREFETCH(xb, (W + j) * C + k, 0);   /* the next block: block_max waited */
                const N_(ent_v) o = N_(ent_vec)(N_(vload_n)(xb + j * C + k, C - k, -(T)INFINITY), m[j]);
                as += o.e;
                at += o.e * o.z;
            }
            sv[j] = as;
            tv[j] = at;
        }
        const V s = N_(vrows_sum)(sv), t = N_(vrows_sum)(tv);
        const VD sd = __builtin_convertvector(s, VD), ts = __builtin_convertvector(t, VD) / sd;
        const VD l = __builtin_convertvector(N_(vlog)(s), VD) - ts;
        for (int j = 0; j < nr; j++) {
            const T *xr = xb + j * C;
            T *gr = g ? g + (r0 + j) * C : NULL;
            if (!fin[j]) {
                N_(entropy_row)(xr, gr, C, gscale, &loss[r0 + j], NULL, 0, xr + C);
                continue;
            }
            loss[r0 + j] = l[j];
            if (!gr) continue;
            const V c = N_(vset1)((T)(-gscale / sd[j])), cts = N_(vset1)((T)(gscale * ts[j] / sd[j]));
            for (int64_t k = 0; k < C; k += W) {
                const int64_t nk = C - k < W ? C - k : W;
                const N_(ent_v) o = N_(ent_vec)(N_(vload_n)(xr + k, nk, -(T)INFINITY), m[j]);
                N_(vstore_n)(gr + k, N_(dv_fma)(o.z, c, cts) * o.e, nk);
            }
        }
    }
}

/* entropy_rows for rows of at most FL_SMALL_C (float64: FL_SMALL_C_F64) classes, a vector
 * holding one class of W rows (block_load_t), as kl_small: z and e stay in the block's
 * arrays for the gradient, the sums are in T and the loss and gradient entropy_mid's. A
 * row that is no distribution gets NaN lanes; g may be x. */
static void N_(entropy_small)(const T *x, T *g, int64_t n, int64_t C, double gscale,
                              double *loss) {
    const VI none = {0};
    V zt[FL_SMALL_C], et[FL_SMALL_C];
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        N_(block_load_t)(x + r0 * C, nr, C, zt);
        V m = zt[0];
        for (int64_t k = 1; k < C; k++) m = N_(vmax_nan)(m, zt[k]);
        const VI fin = N_(dv_fin2)(m, m);
        V s = N_(vset1)(0), t = s;
        for (int64_t k = 0; k < C; k++) {
            const N_(ent_v) o = N_(ent_vec_v)(zt[k], m);
            s += o.e;
            t += o.e * o.z;
            zt[k] = o.z;
            et[k] = o.e;
        }
        const VD sd = __builtin_convertvector(s, VD), ts = __builtin_convertvector(t, VD) / sd;
        const VD l = N_(dv_fix_lanes_d)(__builtin_convertvector(N_(vlog)(s), VD) - ts, fin, none);
        for (int j = 0; j < nr; j++) loss[r0 + j] = l[j];
        if (!g) continue;
        const V c = __builtin_convertvector(-gscale / sd, V), cts = __builtin_convertvector(gscale * ts / sd, V);
        for (int64_t k = 0; k < C; k++)
            zt[k] = N_(dv_fix_lanes)(N_(dv_fma)(zt[k], c, cts) * et[k], fin, none);
        N_(block_store_t)(g + r0 * C, nr, C, zt);
    }
}

/* next: NULL, or for n = 1 above FL_MID_C, where the next row really is (as fl_div_params'
 * next_a). */
static void N_(entropy_rows)(const T *x, T *g, int64_t n, int64_t C, double gscale,
                             double *loss, T *scratch, int stream, const void *next) {
    if (N_(small_rows)(C)) {
        N_(entropy_small)(x, g, n, C, gscale, loss);
        return;
    }
    if (C <= FL_MID_C) {
        N_(entropy_mid)(x, g, n, C, gscale, loss);
        return;
    }
    for (int64_t r = 0; r < n; r++)
        N_(entropy_row)(x + r * C, g ? g + r * C : NULL, C, gscale, &loss[r], scratch, stream,
                        next ? (const T *)next : x + (r + 1) * C);
    N_(vstream_fence)(stream);
}

/* (x - m) / T for x <= m, the shifted logits at a temperature, as (x h - m h) ith with
 * h = 1, ith = 1 / T for T <= 1 and h = 1/2, ith = 2 / T for T > 1 (dv_temp): x h is exact,
 * so the result is never positive, also where x * it - m * it would be contracted to an
 * FMA (exact x * it minus a rounded m * it: +-1e13 at x = m = 1e30, T = 10); the difference
 * overflows only to -inf where (x - m) / T does, for any finite x, m and T. */
FL_INL V N_(dv_scaled_v)(V x, V mh, T h, T ith) { return (x * h - mh) * ith; }
FL_INL V N_(dv_scaled)(V x, T mh, T h, T ith) { return N_(dv_scaled_v)(x, N_(vset1)(mh), h, ith); }
static void N_(dv_temp)(T it, T *h, T *ith) {
    *h = it < (T)1 ? (T)0.5 : (T)1;
    *ith = it / *h;
}

/* Skipped row (label == ignore_index): loss 0, gradient 0. Returns 1 when the row is
 * skipped. */
static int N_(dv_skip_row)(const fl_div_params *p, const int64_t *labels, int64_t r, T *gar, T *gbr,
                           double *loss) {
    if (!labels || labels[r] != p->ignore_index) return 0;
    loss[r] = 0.0;
    if (gar) memset(gar, 0, (size_t)p->C * sizeof(T));
    if (gbr) memset(gbr, 0, (size_t)p->C * sizeof(T));
    return 1;
}

/* KL(softmax(a / T) || softmax(b / T)) per row, into loss[r]. With
 * za = (a - max a) / T, zb likewise, ea = exp(za), sa = sum ea (and b's),
 * d = za - zb (0 where ea == 0) and c = sum ea d / sa (= sum_k p_k (za_k - zb_k)):
 *   KL = c - log sa + log sb,
 *   dKL/dza_j = p_j (log p_j - log q_j - KL) = (ea_j / sa) (d_j - c),
 *   dKL/dzb_j = q_j - p_j.
 * ga / gb (either may be NULL) get those times gscale_p / gscale_q (which carry
 * the 1 / T of the chain rule and the reduction). Where q has no mass on p's support,
 * d = +inf and KL = +inf.
 * labels: NULL, or one per row; rows labelled p->ignore_index are skipped.
 * ce_loss (distillation with hard labels, or NULL): also the cross-entropy of b at
 * temperature 1 against labels, log s1 + max b - b_y with e1 = exp(b - max b), s1 = sum e1,
 * into ce_loss[r], its gradient ce_scale (e1 / s1 - [k = y]) added to gb: the same pass,
 * so the rows are read and gb written once (at T = 1, e1 is eb).
 * scratch: NULL or 3 C elements (ea, eb, d), 4 C with ce_loss at T != 1 (e1), so the
 * gradient pass reads neither input again; without it (long rows) that pass recomputes them.
 * am_a, am_b: NULL, or the argmax of each row of a and of b (np.argmax's rule), skipped
 * rows too; kl_rows' statistics, found with the maxima. */
typedef struct { V ea, eb, d; } N_(kl_v);
FL_INL N_(kl_v) N_(kl_vec_v)(V a, V b, V ma_h, V mb_h, T h, T ith) {
    N_(kl_v) o;
    V za = N_(dv_scaled_v)(a, ma_h, h, ith), zb = N_(dv_scaled_v)(b, mb_h, h, ith);
    o.ea = N_(vexp_le0)(za);
    o.eb = N_(vexp_le0)(zb);
    o.d = N_(dv_zero_if)(o.ea == (T)0, za - zb);
    return o;
}
FL_INL N_(kl_v) N_(kl_vec)(V a, V b, T ma_h, T mb_h, T h, T ith) {
    return N_(kl_vec_v)(a, b, N_(vset1)(ma_h), N_(vset1)(mb_h), h, ith);
}

/* The KL of one row pair without gradients in one read of each row (T, or half: kind,
 * fl_vec.h's vload_src), as row_lse1 (fl_classification_impl.h) reads a softmax row:
 * groups of FL_GROUP vectors of each row, za and zb taken from the running maxima Ma, Mb.
 * When they grow, the float64 lane sums move to the new maxima: za falls by
 * da = (Ma_new - Ma) / T and zb by db, so ea scales by exp(-da), eb by exp(-db) and
 * sum ea d (d = za - zb) becomes exp(-da) (sum ea d + (db - da) sum ea), exactly
 * unchanged when da == db (p == q stays KL 0). A row pair holding a NaN or +inf, or with a
 * whole first group of -inf, returns 0 (no result: kl_rows' exact path); else 1 with
 * the divergence in *loss. am_a, am_b (or NULL): each row's argmax (np.argmax's first
 * maximum), taken where its running max grows, as row_lse1's. */
FL_INL int N_(kl_row1)(const void *a, const void *b, int kind, int64_t C, T h, T ith, double it,
                       double *loss, int64_t *am_a, int64_t *am_b) {
    T Ma = -(T)INFINITY, Mb = -(T)INFINITY, ma_h = 0, mb_h = 0;
    /* the float64 lane sums in halves (dv_widen_halves): [0] the first W / 2 lanes */
    N_(VDH) vsa[2] = {{0}, {0}}, vsb[2] = {{0}, {0}}, vt[2] = {{0}, {0}};
    V zs = N_(vset1)(0);                  /* the sum of every za + zb: NaN iff a NaN was seen */
    T keep_a[FL_GROUP * W], keep_b[FL_GROUP * W];
    for (int64_t k = 0; k < C; k += FL_GROUP * W) {
        const int64_t n = C - k >= FL_GROUP * W ? FL_GROUP * W : C - k;   /* as row_lse1's */
        V gma, gmb;
        if (C - k >= FL_GROUP * W) {
            gma = N_(group_max)(a, kind, k, FL_GROUP * W, keep_a);
            gmb = N_(group_max)(b, kind, k, FL_GROUP * W, keep_b);
        } else {
            gma = N_(group_max)(a, kind, k, n, keep_a);
            gmb = N_(group_max)(b, kind, k, n, keep_b);
        }
        if (__builtin_expect(N_(vany)((gma > Ma) | (gmb > Mb)), 0)) {
            const T ca = N_(vhmax)(gma), cb = N_(vhmax)(gmb);
            const T na = ca > Ma ? ca : Ma, nb = cb > Mb ? cb : Mb;
            if (na == (T)INFINITY || nb == (T)INFINITY) return 0;
            if (am_a && ca > Ma) *am_a = k + N_(group_find)(a, kind, k, n, ca);
            if (am_b && cb > Mb) *am_b = k + N_(group_find)(b, kind, k, n, cb);
            if (Ma != -(T)INFINITY && Mb != -(T)INFINITY) {
                const double da = ((double)na - (double)Ma) * it, db = ((double)nb - (double)Mb) * it;
                const double fa = exp(-da), fb = exp(-db);
                for (int i = 0; i < 2; i++) {
                    vt[i] = (vt[i] + (db - da) * vsa[i]) * fa;
                    vsa[i] *= fa;
                    vsb[i] *= fb;
                }
            }
            Ma = na;
            Mb = nb;
            ma_h = Ma * h;
            mb_h = Mb * h;
        }
        if (Ma == -(T)INFINITY || Mb == -(T)INFINITY) return 0;
        V acc_a = N_(vset1)(0), acc_b = acc_a, acc_t = acc_a;
        for (int i = 0; i < FL_GROUP && i * W < n; i++) {   /* the vectors group_max read */
            const V av = N_(group_vec)(a, kind, k, n, keep_a, i);
            const V bv = N_(group_vec)(b, kind, k, n, keep_b, i);
            const N_(kl_v) o = N_(kl_vec)(av, bv, ma_h, mb_h, h, ith);
            zs += N_(dv_scaled)(av, ma_h, h, ith) + N_(dv_scaled)(bv, mb_h, h, ith);
            acc_a += o.ea;
            acc_b += o.eb;
            acc_t += o.ea * o.d;
        }
        N_(VDH) lo, hi;
        N_(dv_widen_halves)(acc_a, &lo, &hi);
        vsa[0] += lo;
        vsa[1] += hi;
        N_(dv_widen_halves)(acc_b, &lo, &hi);
        vsb[0] += lo;
        vsb[1] += hi;
        N_(dv_widen_halves)(acc_t, &lo, &hi);
        vt[0] += lo;
        vt[1] += hi;
    }
    if (N_(vany)(zs != zs)) return 0;
    const double sa = N_(dv_dsum)(N_(dv_join)(vsa[0], vsa[1])), sb = N_(dv_dsum)(N_(dv_join)(vsb[0], vsb[1]));
    *loss = N_(dv_dsum)(N_(dv_join)(vt[0], vt[1])) / sa - log(sa) + log(sb);
    return 1;
}

/* kl_row1 with temperature 1 compiled apart (the usual case): its scaling x h - m h times
 * ith is then x - m, the same bits, with two instructions fewer per element. */
FL_INL int N_(kl_row1_any_t)(const void *a, const void *b, int kind, int64_t C, T h, T ith,
                             double it, double *loss, int64_t *am_a, int64_t *am_b) {
    return it == 1.0 ? N_(kl_row1)(a, b, kind, C, 1, 1, 1.0, loss, am_a, am_b)
                     : N_(kl_row1)(a, b, kind, C, h, ith, it, loss, am_a, am_b);
}

/* kl_rows one row pair at a time (any class count and option). */
static void N_(kl_row_path)(const T *a, const T *b, T *ga, T *gb, int64_t n, const int64_t *labels,
                            const fl_div_params *p, double *loss, double *ce_loss, T *scratch,
                            int64_t *am_a, int64_t *am_b) {
    const int64_t C = p->C, Cv = C - C % W, nt = C - Cv;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const int stream = p->stream;
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL, *sd_buf = scratch ? scratch + 2 * C : NULL;
    const int ce = ce_loss != NULL, ce_t1 = ce && p->inv_t == 1.0;   /* ce_t1: e1 is eb */
    T *s1_buf = ce_t1 ? sb_buf : ce && scratch ? scratch + 3 * C : NULL;
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        const T *na = p->next_a ? (const T *)p->next_a : ar + C;
        const T *nb = p->next_b ? (const T *)p->next_b : br + C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        int64_t *pa = am_a ? am_a + r : NULL, *pb = am_b ? am_b + r : NULL;
        T ma, mb;
        /* a skipped row's argmaxes before its gradients (which may be the rows) are zeroed */
        if (pa && labels && labels[r] == p->ignore_index) N_(dv_max2_at)(ar, br, C, &ma, &mb, pa, pb);
        if (N_(dv_skip_row)(p, labels, r, gar, gbr, loss)) {
            if (ce) ce_loss[r] = 0.0;
            continue;
        }
        if (!ce && !gar && !gbr && N_(kl_row1_any_t)(ar, br, FL_NATIVE, C, h, ith, p->inv_t, &loss[r], pa, pb))
            continue;
        N_(dv_max2_at)(ar, br, C, &ma, &mb, pa, pb);
        if (N_(dv_bad_row)(ma, mb, C, &loss[r], gar, gbr)) {
            if (ce) ce_loss[r] = NAN;
            continue;
        }
        const T ma_h = ma * h, mb_h = mb * h;
        const int64_t y = ce ? labels[r] : 0;
        const T by = ce ? br[y] : 0;       /* before gb (which may be b) is written */
        VD vsa = N_(dv_dzero)(), vsb = vsa, vt = vsa, vs1 = vsa;
        N_(kl_v) o;
        for (int64_t k0 = 0; k0 < Cv; k0 += FL_SUM_BLOCK) {
            const int64_t end = k0 + FL_SUM_BLOCK < Cv ? k0 + FL_SUM_BLOCK : Cv;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0), acc_t = N_(vset1)(0), acc_1 = acc_a;
            for (int64_t k = k0; k < end; k += W) {
                /* the next row pair streams in while this one is computed */
                FL_PREFETCH(na, k, 0);
                FL_PREFETCH(nb, k, 0);
                const V bk = N_(vload)(br + k);
                o = N_(kl_vec)(N_(vload)(ar + k), bk, ma_h, mb_h, h, ith);
                acc_a += o.ea;
                acc_b += o.eb;
                acc_t += o.ea * o.d;
                if (scratch) {
                    N_(vstore)(sa_buf + k, o.ea);
                    N_(vstore)(sb_buf + k, o.eb);
                    N_(vstore)(sd_buf + k, o.d);
                }
                if (ce && !ce_t1) {
                    const V e1 = N_(vexp_le0)(bk - mb);
                    acc_1 += e1;
                    if (s1_buf) N_(vstore)(s1_buf + k, e1);
                }
            }
            vsa = N_(dv_widen_add)(vsa, acc_a);
            vsb = N_(dv_widen_add)(vsb, acc_b);
            vt = N_(dv_widen_add)(vt, acc_t);
            if (ce && !ce_t1) vs1 = N_(dv_widen_add)(vs1, acc_1);
        }
        if (nt) {
            const V bk = N_(vload_part)(br + Cv, nt, -(T)INFINITY);
            o = N_(kl_vec)(N_(vload_part)(ar + Cv, nt, -(T)INFINITY), bk, ma_h, mb_h, h, ith);
            vsa = N_(dv_widen_add)(vsa, o.ea);
            vsb = N_(dv_widen_add)(vsb, o.eb);
            vt = N_(dv_widen_add)(vt, o.ea * o.d);
            if (scratch) {
                N_(vstore_part)(sa_buf + Cv, o.ea, nt);
                N_(vstore_part)(sb_buf + Cv, o.eb, nt);
                N_(vstore_part)(sd_buf + Cv, o.d, nt);
            }
            if (ce && !ce_t1) {
                const V e1 = N_(vexp_le0)(bk - mb);
                vs1 = N_(dv_widen_add)(vs1, e1);
                if (s1_buf) N_(vstore_part)(s1_buf + Cv, e1, nt);
            }
        }
        const double sa = N_(dv_dsum)(vsa), sb = N_(dv_dsum)(vsb), c = N_(dv_dsum)(vt) / sa;
        const double s1 = ce_t1 ? sb : N_(dv_dsum)(vs1);
        loss[r] = c - log(sa) + log(sb);
        if (ce) ce_loss[r] = ((double)mb - (double)by) + log(s1);
        if (!gar && !gbr) continue;
        /* ga = (d pg - pc) ea, gb = (eb sa / sb - ea) qa [+ e1 cs - ce_scale at y] */
        const T pg = (T)(p->gscale_p / sa), pc = (T)(c * p->gscale_p / sa);
        const T rab = (T)(sa / sb), qa = (T)(p->gscale_q / sa), cs = (T)(ce ? p->ce_scale / s1 : 0.0);
        if (scratch) {
            if (gar) N_(dv_write_row)(gar, C, sd_buf, NULL, sa_buf, pg, -pc, 0, NULL, 0, stream);
            if (gbr) N_(dv_write_row)(gbr, C, sb_buf, sa_buf, NULL, rab, 0, qa, s1_buf, cs, stream);
        } else {
            for (int64_t k = 0; k < C; k += W) {
                const int64_t nk = C - k < W ? C - k : W;
                const V bk = N_(vload_n)(br + k, nk, -(T)INFINITY);
                o = N_(kl_vec)(N_(vload_n)(ar + k, nk, -(T)INFINITY), bk, ma_h, mb_h, h, ith);
                if (gar) N_(vstore_n)(gar + k, N_(dv_fma)(o.d, N_(vset1)(pg), N_(vset1)(-pc)) * o.ea, nk);
                if (gbr) {
                    V gk = N_(dv_fma)(o.eb, N_(vset1)(rab), -o.ea) * qa;
                    if (ce) gk = N_(dv_fma)(ce_t1 ? o.eb : N_(vexp_le0)(bk - mb), N_(vset1)(cs), gk);
                    N_(vstore_n)(gbr + k, gk, nk);
                }
            }
        }
        /* the label's term; a streamed store above is seen by this thread's own read */
        if (ce && gbr) gbr[y] -= (T)p->ce_scale;
    }
    N_(vstream_fence)(stream);
}

/* kl_rows for rows of at most FL_MID_C classes, in blocks of W row pairs, each step
 * across the block's rows (as entropy_mid): KL = c + log(sb / sa), the ratio rounded to T
 * and its log one vlog a block (no cancellation where p ~ q; exactly 0 where a == b); with
 * ce_loss, b's cross-entropy (mb - b_y) + log s1 the same way. The gradient pass recomputes
 * ea, eb, d (and e1) from a and b, reading both of an element before writing either
 * gradient, so ga and gb may be a or b, either way round; b_y is read before. Pairs holding
 * a NaN or a non-finite max, and skipped rows, take kl_row_path. am_a, am_b: as kl_rows'
 * (a pair on this path holds no NaN: the first maximum is np.argmax's), found before the
 * pair's gradients are written. */
static void N_(kl_mid)(const T *a, const T *b, T *ga, T *gb, int64_t n, const int64_t *labels,
                       const fl_div_params *p, double *loss, double *ce_loss, int64_t *am_a,
                       int64_t *am_b) {
    const int64_t C = p->C;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const int ce = ce_loss != NULL, ce_t1 = ce && p->inv_t == 1.0;   /* ce_t1: e1 is eb */
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *ab = a + r0 * C, *bb = b + r0 * C;
        VI fa, fb;
        const V ma = N_(block_max)(ab, nr, C, &fa), mb = N_(block_max)(bb, nr, C, &fb);
        VI ok = fa & fb;
        T by[W] = {0};
        for (int j = 0; labels && j < nr; j++) {
            if (labels[r0 + j] == p->ignore_index) ok[j] = 0;
            else if (ce) by[j] = bb[j * C + labels[r0 + j]];
        }
        V sav[W], sbv[W], tv[W], s1v[W];
        for (int j = 0; j < W; j++) {
            V acc_a = N_(vset1)(0), acc_b = acc_a, acc_t = acc_a, acc_1 = acc_a;
            const T ma_h = ma[j] * h, mb_h = mb[j] * h;
            for (int64_t k = 0; j < nr && ok[j] && k < C; k += W) {
                FL_PREFETCH(ab, (W + j) * C + k, 0);   /* the next block: block_max waited */
                FL_PREFETCH(bb, (W + j) * C + k, 0);
                const V bk = N_(vload_n)(bb + j * C + k, C - k, -(T)INFINITY);
                const N_(kl_v) o = N_(kl_vec)(N_(vload_n)(ab + j * C + k, C - k, -(T)INFINITY), bk,
                                              ma_h, mb_h, h, ith);
                acc_a += o.ea;
                acc_b += o.eb;
                acc_t += o.ea * o.d;
                if (ce && !ce_t1) acc_1 += N_(vexp_le0)(bk - mb[j]);
            }
            sav[j] = acc_a;
            sbv[j] = acc_b;
            tv[j] = acc_t;
            s1v[j] = acc_1;
        }
        const V sbt = N_(vrows_sum)(sbv);
        const VD sa = __builtin_convertvector(N_(vrows_sum)(sav), VD);
        const VD sb = __builtin_convertvector(sbt, VD);
        const VD c = __builtin_convertvector(N_(vrows_sum)(tv), VD) / sa;
        const VD l = c + __builtin_convertvector(N_(vlog)(__builtin_convertvector(sb / sa, V)), VD);
        const V s1 = ce_t1 ? sbt : ce ? N_(vrows_sum)(s1v) : N_(vset1)(1);
        const VD lce = __builtin_convertvector(mb, VD) - __builtin_convertvector(N_(vload)(by), VD)
                       + __builtin_convertvector(N_(vlog)(s1), VD);
        for (int j = 0; j < nr; j++) {
            const int64_t r = r0 + j;
            T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
            if (!ok[j]) {
                N_(kl_row_path)(a + r * C, b + r * C, gar, gbr, 1, labels ? labels + r : NULL, p,
                                &loss[r], ce ? ce_loss + r : NULL, NULL,
                                am_a ? am_a + r : NULL, am_b ? am_b + r : NULL);
                continue;
            }
            loss[r] = l[j];
            if (ce) ce_loss[r] = lce[j];
            if (am_a) {
                am_a[r] = N_(row_find)(a + r * C, C, ma[j]);
                am_b[r] = N_(row_find)(b + r * C, C, mb[j]);
            }
            if (!gar && !gbr) continue;
            /* as kl_row_path's: ga = (d pg - pc) ea, gb = (eb sa / sb - ea) qa [+ e1 cs - ce_scale at y] */
            const V pg = N_(vset1)((T)(p->gscale_p / sa[j])), pc = N_(vset1)((T)(c[j] * p->gscale_p / sa[j]));
            const V rab = N_(vset1)((T)(sa[j] / sb[j])), qa = N_(vset1)((T)(p->gscale_q / sa[j]));
            const V cs = N_(vset1)((T)(ce ? p->ce_scale / (double)s1[j] : 0.0));
            const T ma_h = ma[j] * h, mb_h = mb[j] * h;
            for (int64_t k = 0; k < C; k += W) {
                const int64_t nk = C - k < W ? C - k : W;
                const V bk = N_(vload_n)(b + r * C + k, nk, -(T)INFINITY);
                const N_(kl_v) o = N_(kl_vec)(N_(vload_n)(a + r * C + k, nk, -(T)INFINITY), bk,
                                              ma_h, mb_h, h, ith);
                if (gar) N_(vstore_n)(gar + k, N_(dv_fma)(o.d, pg, -pc) * o.ea, nk);
                if (gbr) {
                    V gk = N_(dv_fma)(o.eb, rab, -o.ea) * qa;
                    if (ce) gk = N_(dv_fma)(ce_t1 ? o.eb : N_(vexp_le0)(bk - mb[j]), cs, gk);
                    N_(vstore_n)(gbr + k, gk, nk);
                }
            }
            if (ce && gbr) gbr[labels[r]] -= (T)p->ce_scale;
        }
    }
}

/* kl_rows for rows of at most FL_SMALL_C (float64: FL_SMALL_C_F64) classes, labels and the
 * cross-entropy too, a vector holding one class of W rows (block_load_t), as
 * xent_label_small: maxima, argmaxes (vamax_step), sums and logs run across rows, and ea,
 * eb, d (and e1) stay in the block's arrays for the gradients. The sums are in T (at
 * most FL_SMALL_C terms) and KL = c + log(sb / sa) as kl_mid's; a row that is no
 * distribution gets NaN lanes and a skipped row 0, kl_row_path's results. Both blocks are
 * read before either gradient is stored, so ga and gb may be a or b either way round. */
static void N_(kl_small)(const T *a, const T *b, T *ga, T *gb, int64_t n, const int64_t *labels,
                         const fl_div_params *p, double *loss, double *ce_loss, int64_t *am_a,
                         int64_t *am_b) {
    const int64_t C = p->C;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const int ce = ce_loss != NULL, ce_t1 = ce && p->inv_t == 1.0;   /* ce_t1: e1 is eb */
    V at[FL_SMALL_C], bt[FL_SMALL_C], dt[FL_SMALL_C], et[FL_SMALL_C];
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        /* labels as lanes of T (exact: < FL_SMALL_C): a skipped row is -1, as xent_label_small */
        T yb[W];
        for (int j = 0; j < W; j++)
            yb[j] = labels && j < nr && labels[r0 + j] == p->ignore_index ? -1
                    : ce && j < nr ? (T)labels[r0 + j] : 0;
        const V yv = N_(vload)(yb);
        const VI skip = yv < 0;
        N_(block_load_t)(a + r0 * C, nr, C, at);
        N_(block_load_t)(b + r0 * C, nr, C, bt);
        V ma = at[0], mb = bt[0];
        VI ia = {0}, ib = {0};
        for (int64_t k = 1; k < C; k++) {
            if (am_a) {
                ia = N_(vamax_step)(ia, ma, at[k], k);
                ib = N_(vamax_step)(ib, mb, bt[k], k);
            }
            ma = N_(vmax_nan)(ma, at[k]);
            mb = N_(vmax_nan)(mb, bt[k]);
        }
        const VI fin = N_(dv_fin2)(ma, mb);
        const V mah = ma * h, mbh = mb * h;
        V sa = N_(vset1)(0), sb = sa, t = sa, s1 = sa, by = sa;
        for (int64_t k = 0; k < C; k++) {
            if (ce) by = N_(vsel)(yv == (T)k, bt[k], by);
            if (ce && !ce_t1) {
                et[k] = N_(vexp_le0)(bt[k] - mb);
                s1 += et[k];
            }
            const N_(kl_v) o = N_(kl_vec_v)(at[k], bt[k], mah, mbh, h, ith);
            sa += o.ea;
            sb += o.eb;
            t += o.ea * o.d;
            at[k] = o.ea;
            bt[k] = o.eb;
            dt[k] = o.d;
        }
        if (ce_t1) s1 = sb;
        const VD sad = __builtin_convertvector(sa, VD), sbd = __builtin_convertvector(sb, VD);
        const VD c = __builtin_convertvector(t, VD) / sad;
        const VD l = N_(dv_fix_lanes_d)(c + __builtin_convertvector(N_(vlog)(sb / sa), VD), fin, skip);
        VD lce = {0};
        if (ce)
            lce = N_(dv_fix_lanes_d)(__builtin_convertvector(mb, VD) - __builtin_convertvector(by, VD)
                                     + __builtin_convertvector(N_(vlog)(s1), VD), fin, skip);
        for (int j = 0; j < nr; j++) {
            loss[r0 + j] = l[j];
            if (ce) ce_loss[r0 + j] = lce[j];
            if (am_a) {
                am_a[r0 + j] = ia[j];
                am_b[r0 + j] = ib[j];
            }
        }
        if (!ga && !gb) continue;
        /* as kl_row_path's: ga = (d pg - pc) ea, gb = (eb sa / sb - ea) qa [+ e1 cs - ce_scale at y] */
        const V pg = __builtin_convertvector(p->gscale_p / sad, V);
        const V pc = __builtin_convertvector(c * p->gscale_p / sad, V);
        const V rab = __builtin_convertvector(sad / sbd, V), qa = __builtin_convertvector(p->gscale_q / sad, V);
        const V cs = ce ? __builtin_convertvector(p->ce_scale / __builtin_convertvector(s1, VD), V) : sa;
        const V cy = N_(vset1)((T)p->ce_scale);
        for (int64_t k = 0; k < C; k++) {
            V gk = N_(dv_fma)(bt[k], rab, -at[k]) * qa;
            if (ce) {
                gk = N_(dv_fma)(ce_t1 ? bt[k] : et[k], cs, gk);
                gk -= N_(vsel)(yv == (T)k, cy, N_(vset1)(0));
            }
            bt[k] = N_(dv_fix_lanes)(gk, fin, skip);
            at[k] = N_(dv_fix_lanes)(N_(dv_fma)(dt[k], pg, -pc) * at[k], fin, skip);
        }
        if (ga) N_(block_store_t)(ga + r0 * C, nr, C, at);
        if (gb) N_(block_store_t)(gb + r0 * C, nr, C, bt);
    }
}

static void N_(kl_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n, const int64_t *labels,
                        const fl_div_params *p, double *loss, double *ce_loss, T *scratch,
                        int64_t *am_a, int64_t *am_b) {
    if (N_(small_rows)(p->C))
        N_(kl_small)(a, b, ga, gb, n, labels, p, loss, ce_loss, am_a, am_b);
    else if (p->C <= FL_MID_C)
        N_(kl_mid)(a, b, ga, gb, n, labels, p, loss, ce_loss, am_a, am_b);
    else
        N_(kl_row_path)(a, b, ga, gb, n, labels, p, loss, ce_loss, scratch, am_a, am_b);
}

#if !FL_DOUBLE
/* kl_rows without gradients on float16 / bfloat16 row pairs (kind: fl_half.h): kl_row1
 * reads the half values straight into registers (each row read once, at its own width);
 * a pair it gives no result for (or a skipped one whose argmaxes are wanted) is converted
 * into scratch (2 C elements) for kl_rows. Same results as kl_rows on the float32 upcasts,
 * whose loss-only rows take kl_row1 too: of more than FL_MID_C classes (the caller converts
 * shorter rows a block at a time for kl_small and kl_mid). */
static void N_(kl_rows_half)(int kind, const uint16_t *a, const uint16_t *b, int64_t n,
                             const int64_t *labels, const fl_div_params *p, double *loss,
                             T *scratch, int64_t *am_a, int64_t *am_b) {
    const int64_t C = p->C;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *ar = a + r * C, *br = b + r * C;
        int64_t *pa = am_a ? am_a + r : NULL, *pb = am_b ? am_b + r : NULL;
        const int skip = N_(dv_skip_row)(p, labels, r, NULL, NULL, loss);
        if (skip && !pa) continue;
        if (!skip && (kind == FL_BFLOAT16
                      ? N_(kl_row1_any_t)(ar, br, FL_BFLOAT16, C, h, ith, p->inv_t, &loss[r], pa, pb)
                      : N_(kl_row1_any_t)(ar, br, FL_FLOAT16, C, h, ith, p->inv_t, &loss[r], pa, pb)))
            continue;
        fl_half_to_float(kind, ar, scratch, C);
        fl_half_to_float(kind, br, scratch + C, C);
        N_(kl_rows)(scratch, scratch + C, NULL, NULL, 1, labels ? labels + r : NULL, p, &loss[r], NULL,
                    NULL, pa, pb);
    }
}
#endif

/* Generalised Jensen-Shannon divergence per row, into loss[r]:
 *   JS = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,
 * p = softmax(a / T), q = softmax(b / T). With u = log p - log m, v = log q - log m
 * (0 where p, resp. q, is 0), Kp = sum p u, Kq = sum q v:
 *   dJS/dza_j = beta p_j (u_j - Kp),  dJS/dzb_j = (1 - beta) q_j (v_j - Kq).
 * beta = 0 or 1 makes m equal one side: JS is exactly 0.
 * scratch: NULL or 4 C elements (ea, eb, u, v); without it the later passes recompute. */
typedef struct { V za, zb, ea, eb; } N_(js_e);
FL_INL N_(js_e) N_(js_exp_v)(V a, V b, V ma_h, V mb_h, T h, T ith) {
    N_(js_e) o;
    o.za = N_(dv_scaled_v)(a, ma_h, h, ith);
    o.zb = N_(dv_scaled_v)(b, mb_h, h, ith);
    o.ea = N_(vexp_le0)(o.za);
    o.eb = N_(vexp_le0)(o.zb);
    return o;
}
FL_INL N_(js_e) N_(js_exp)(V a, V b, T ma_h, T mb_h, T h, T ith) {
    return N_(js_exp_v)(a, b, N_(vset1)(ma_h), N_(vset1)(mb_h), h, ith);
}
/* u and v from the exponentials: one log per element (pa = beta / sa, pb = (1 - beta) / sb,
 * la = log sa, lb = log sb). */
typedef struct { V u, v; } N_(js_uv);
FL_INL N_(js_uv) N_(js_log_v)(N_(js_e) e, V pa, V pb, V la, V lb) {
    N_(js_uv) o;
    V lm = N_(vlog)(e.ea * pa + e.eb * pb);
    o.u = N_(dv_zero_if)(e.ea == (T)0, e.za - la - lm);
    o.v = N_(dv_zero_if)(e.eb == (T)0, e.zb - lb - lm);
    return o;
}
FL_INL N_(js_uv) N_(js_log)(N_(js_e) e, T pa, T pb, T la, T lb) {
    return N_(js_log_v)(e, N_(vset1)(pa), N_(vset1)(pb), N_(vset1)(la), N_(vset1)(lb));
}

static void N_(js_row_path)(const T *a, const T *b, T *ga, T *gb, int64_t n,
                            const fl_div_params *p, double *loss, T *scratch) {
    const int64_t C = p->C, Cv = C - C % W, nt = C - Cv;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const double beta = p->beta;
    const int stream = p->stream;
    T *sa_buf = scratch, *sb_buf = scratch ? scratch + C : NULL;
    T *su_buf = scratch ? scratch + 2 * C : NULL, *sv_buf = scratch ? scratch + 3 * C : NULL;
    const int keep_uv = scratch && (ga || gb);   /* the gradient pass reads u and v */
    for (int64_t r = 0; r < n; r++) {
        const T *ar = a + r * C, *br = b + r * C;
        const T *na = p->next_a ? (const T *)p->next_a : ar + C;
        const T *nb = p->next_b ? (const T *)p->next_b : br + C;
        T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
        T ma, mb;
        N_(dv_max2_at)(ar, br, C, &ma, &mb, NULL, NULL);
        if (N_(dv_bad_row)(ma, mb, C, &loss[r], gar, gbr)) continue;
        if (!(beta > 0.0 && beta < 1.0)) {
            /* m is p (or q): the divergence vanishes */
            loss[r] = 0.0;
            if (gar) memset(gar, 0, (size_t)C * sizeof(T));
            if (gbr) memset(gbr, 0, (size_t)C * sizeof(T));
            continue;
        }
        const T ma_h = ma * h, mb_h = mb * h;
        VD vsa = N_(dv_dzero)(), vsb = vsa;
        N_(js_e) e;
        for (int64_t k0 = 0; k0 < Cv; k0 += FL_SUM_BLOCK) {
            const int64_t end = k0 + FL_SUM_BLOCK < Cv ? k0 + FL_SUM_BLOCK : Cv;
            V acc_a = N_(vset1)(0), acc_b = N_(vset1)(0);
            for (int64_t k = k0; k < end; k += W) {
                /* the next row pair streams in meanwhile: a's here, b's in the next pass
                 * (both here asked for more than memory gave, and the max pass waited) */
                FL_PREFETCH(na, k, 0);
                if (!scratch) FL_PREFETCH(nb, k, 0);
                e = N_(js_exp)(N_(vload)(ar + k), N_(vload)(br + k), ma_h, mb_h, h, ith);
                acc_a += e.ea;
                acc_b += e.eb;
                if (scratch) {
                    N_(vstore)(sa_buf + k, e.ea);
                    N_(vstore)(sb_buf + k, e.eb);
                }
            }
            vsa = N_(dv_widen_add)(vsa, acc_a);
            vsb = N_(dv_widen_add)(vsb, acc_b);
        }
        if (nt) {
            e = N_(js_exp)(N_(vload_part)(ar + Cv, nt, -(T)INFINITY), N_(vload_part)(br + Cv, nt, -(T)INFINITY),
                           ma_h, mb_h, h, ith);
            vsa = N_(dv_widen_add)(vsa, e.ea);
            vsb = N_(dv_widen_add)(vsb, e.eb);
            if (scratch) {
                N_(vstore_part)(sa_buf + Cv, e.ea, nt);
                N_(vstore_part)(sb_buf + Cv, e.eb, nt);
            }
        }
        const double sa = N_(dv_dsum)(vsa), sb = N_(dv_dsum)(vsb);
        const T pa = (T)(beta / sa), pb = (T)((1.0 - beta) / sb);
        const T la = (T)log(sa), lb = (T)log(sb);
        VD vkp = N_(dv_dzero)(), vkq = vkp;
        N_(js_uv) uv;
        for (int64_t k0 = 0; k0 < Cv; k0 += FL_SUM_BLOCK) {
            const int64_t end = k0 + FL_SUM_BLOCK < Cv ? k0 + FL_SUM_BLOCK : Cv;
            V acc_p = N_(vset1)(0), acc_q = N_(vset1)(0);
            for (int64_t k = k0; k < end; k += W) {
                if (scratch) FL_PREFETCH(nb, k, 0);
                V xa = N_(vload)(ar + k), xb = N_(vload)(br + k);
                if (scratch) {
                    e.za = N_(dv_scaled)(xa, ma_h, h, ith);
                    e.zb = N_(dv_scaled)(xb, mb_h, h, ith);
                    e.ea = N_(vload)(sa_buf + k);
                    e.eb = N_(vload)(sb_buf + k);
                } else {
                    e = N_(js_exp)(xa, xb, ma_h, mb_h, h, ith);
                }
                uv = N_(js_log)(e, pa, pb, la, lb);
                acc_p += e.ea * uv.u;
                acc_q += e.eb * uv.v;
                if (keep_uv) {
                    N_(vstore)(su_buf + k, uv.u);
                    N_(vstore)(sv_buf + k, uv.v);
                }
            }
            vkp = N_(dv_widen_add)(vkp, acc_p);
            vkq = N_(dv_widen_add)(vkq, acc_q);
        }
        if (nt) {
            e = N_(js_exp)(N_(vload_part)(ar + Cv, nt, -(T)INFINITY), N_(vload_part)(br + Cv, nt, -(T)INFINITY),
                           ma_h, mb_h, h, ith);
            uv = N_(js_log)(e, pa, pb, la, lb);
            vkp = N_(dv_widen_add)(vkp, e.ea * uv.u);
            vkq = N_(dv_widen_add)(vkq, e.eb * uv.v);
            if (keep_uv) {
                N_(vstore_part)(su_buf + Cv, uv.u, nt);
                N_(vstore_part)(sv_buf + Cv, uv.v, nt);
            }
        }
        const double kp = N_(dv_dsum)(vkp) / sa, kq = N_(dv_dsum)(vkq) / sb;
        loss[r] = beta * kp + (1.0 - beta) * kq;
        if (!gar && !gbr) continue;
        /* ga = (u - Kp) ea gpa, gb = (v - Kq) eb gqb */
        const T gpa = (T)(p->gscale_p * beta / sa), gqb = (T)(p->gscale_q * (1.0 - beta) / sb);
        const T kpg = (T)(kp * p->gscale_p * beta / sa), kqg = (T)(kq * p->gscale_q * (1.0 - beta) / sb);
        if (scratch) {
            if (gar) N_(dv_write_row)(gar, C, su_buf, NULL, sa_buf, gpa, -kpg, 0, NULL, 0, stream);
            if (gbr) N_(dv_write_row)(gbr, C, sv_buf, NULL, sb_buf, gqb, -kqg, 0, NULL, 0, stream);
            continue;
        }
        for (int64_t k = 0; k < C; k += W) {
            const int64_t nk = C - k < W ? C - k : W;
            e = N_(js_exp)(N_(vload_n)(ar + k, nk, -(T)INFINITY), N_(vload_n)(br + k, nk, -(T)INFINITY),
                           ma_h, mb_h, h, ith);
            uv = N_(js_log)(e, pa, pb, la, lb);
            if (gar) N_(vstore_n)(gar + k, N_(dv_fma)(uv.u, N_(vset1)(gpa), N_(vset1)(-kpg)) * e.ea, nk);
            if (gbr) N_(vstore_n)(gbr + k, N_(dv_fma)(uv.v, N_(vset1)(gqb), N_(vset1)(-kqg)) * e.eb, nk);
        }
    }
    N_(vstream_fence)(stream);
}

/* js_rows for 0 < beta < 1 and rows of at most FL_MID_C classes, in blocks of W row pairs
 * (as kl_mid): the exponentials' sums, then u and v's weighted sums, then the gradients,
 * each a pass over the block's rows in L1 that recomputes ea and eb from a and b; the
 * rows' sums one transposition each and log sa, log sb one vlog a block. Each element of
 * both rows is read before either gradient is written, so ga and gb may be a or b. Pairs
 * holding a NaN or a non-finite max take js_row_path. */
static void N_(js_mid)(const T *a, const T *b, T *ga, T *gb, int64_t n, const fl_div_params *p,
                       double *loss) {
    const int64_t C = p->C;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const double beta = p->beta;
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        const T *ab = a + r0 * C, *bb = b + r0 * C;
        VI fa, fb;
        const V ma = N_(block_max)(ab, nr, C, &fa), mb = N_(block_max)(bb, nr, C, &fb);
        const VI ok = fa & fb;
        const V mah = ma * h, mbh = mb * h;
        V sav[W], sbv[W];
        for (int j = 0; j < W; j++) {
            V acc_a = N_(vset1)(0), acc_b = acc_a;
            for (int64_t k = 0; j < nr && ok[j] && k < C; k += W) {
                FL_PREFETCH(ab, (W + j) * C + k, 0);   /* the next block: block_max waited */
                FL_PREFETCH(bb, (W + j) * C + k, 0);
                const N_(js_e) e = N_(js_exp)(N_(vload_n)(ab + j * C + k, C - k, -(T)INFINITY),
                                              N_(vload_n)(bb + j * C + k, C - k, -(T)INFINITY),
                                              mah[j], mbh[j], h, ith);
                acc_a += e.ea;
                acc_b += e.eb;
            }
            sav[j] = acc_a;
            sbv[j] = acc_b;
        }
        const V sa = N_(vrows_sum)(sav), sb = N_(vrows_sum)(sbv);
        const VD sad = __builtin_convertvector(sa, VD), sbd = __builtin_convertvector(sb, VD);
        const V pa = __builtin_convertvector(beta / sad, V), pb = __builtin_convertvector((1.0 - beta) / sbd, V);
        const V la = N_(vlog)(sa), lb = N_(vlog)(sb);
        V kpv[W], kqv[W];
        for (int j = 0; j < W; j++) {
            V acc_p = N_(vset1)(0), acc_q = acc_p;
            for (int64_t k = 0; j < nr && ok[j] && k < C; k += W) {
                const N_(js_e) e = N_(js_exp)(N_(vload_n)(ab + j * C + k, C - k, -(T)INFINITY),
                                              N_(vload_n)(bb + j * C + k, C - k, -(T)INFINITY),
                                              mah[j], mbh[j], h, ith);
                const N_(js_uv) uv = N_(js_log)(e, pa[j], pb[j], la[j], lb[j]);
                acc_p += e.ea * uv.u;
                acc_q += e.eb * uv.v;
            }
            kpv[j] = acc_p;
            kqv[j] = acc_q;
        }
        const VD kp = __builtin_convertvector(N_(vrows_sum)(kpv), VD) / sad;
        const VD kq = __builtin_convertvector(N_(vrows_sum)(kqv), VD) / sbd;
        const VD l = beta * kp + (1.0 - beta) * kq;
        for (int j = 0; j < nr; j++) {
            const int64_t r = r0 + j;
            T *gar = ga ? ga + r * C : NULL, *gbr = gb ? gb + r * C : NULL;
            if (!ok[j]) {
                N_(js_row_path)(a + r * C, b + r * C, gar, gbr, 1, p, &loss[r], NULL);
                continue;
            }
            loss[r] = l[j];
            if (!gar && !gbr) continue;
            /* as js_row_path's: ga = (u - Kp) ea gpa, gb = (v - Kq) eb gqb */
            const double wa = p->gscale_p * beta / sad[j], wb = p->gscale_q * (1.0 - beta) / sbd[j];
            const V gpa = N_(vset1)((T)wa), gqb = N_(vset1)((T)wb);
            const V kpg = N_(vset1)((T)(-kp[j] * wa)), kqg = N_(vset1)((T)(-kq[j] * wb));
            for (int64_t k = 0; k < C; k += W) {
                const int64_t nk = C - k < W ? C - k : W;
                const N_(js_e) e = N_(js_exp)(N_(vload_n)(a + r * C + k, nk, -(T)INFINITY),
                                              N_(vload_n)(b + r * C + k, nk, -(T)INFINITY),
                                              mah[j], mbh[j], h, ith);
                const N_(js_uv) uv = N_(js_log)(e, pa[j], pb[j], la[j], lb[j]);
                if (gar) N_(vstore_n)(gar + k, N_(dv_fma)(uv.u, gpa, kpg) * e.ea, nk);
                if (gbr) N_(vstore_n)(gbr + k, N_(dv_fma)(uv.v, gqb, kqg) * e.eb, nk);
            }
        }
    }
}

/* js_rows for 0 < beta < 1 and rows of at most FL_SMALL_C (float64: FL_SMALL_C_F64)
 * classes, a vector holding one class of W rows (block_load_t), as kl_small: za, zb,
 * ea, eb and then u, v stay in the block's arrays, so each exponential and log is taken
 * once. A row that is no distribution gets NaN lanes; ga and gb may be a or b. */
static void N_(js_small)(const T *a, const T *b, T *ga, T *gb, int64_t n, const fl_div_params *p,
                         double *loss) {
    const int64_t C = p->C;
    T h, ith;
    N_(dv_temp)((T)p->inv_t, &h, &ith);
    const double beta = p->beta;
    const VI none = {0};
    V at[FL_SMALL_C], bt[FL_SMALL_C], eat[FL_SMALL_C], ebt[FL_SMALL_C];
    for (int64_t r0 = 0; r0 < n; r0 += W) {
        const int64_t nr = n - r0 < W ? n - r0 : W;
        N_(block_load_t)(a + r0 * C, nr, C, at);
        N_(block_load_t)(b + r0 * C, nr, C, bt);
        V ma = at[0], mb = bt[0];
        for (int64_t k = 1; k < C; k++) {
            ma = N_(vmax_nan)(ma, at[k]);
            mb = N_(vmax_nan)(mb, bt[k]);
        }
        const VI fin = N_(dv_fin2)(ma, mb);
        const V mah = ma * h, mbh = mb * h;
        V sa = N_(vset1)(0), sb = sa;
        for (int64_t k = 0; k < C; k++) {
            const N_(js_e) e = N_(js_exp_v)(at[k], bt[k], mah, mbh, h, ith);
            sa += e.ea;
            sb += e.eb;
            at[k] = e.za;
            bt[k] = e.zb;
            eat[k] = e.ea;
            ebt[k] = e.eb;
        }
        const VD sad = __builtin_convertvector(sa, VD), sbd = __builtin_convertvector(sb, VD);
        const V pa = __builtin_convertvector(beta / sad, V), pb = __builtin_convertvector((1.0 - beta) / sbd, V);
        const V la = N_(vlog)(sa), lb = N_(vlog)(sb);
        V kp = N_(vset1)(0), kq = kp;
        for (int64_t k = 0; k < C; k++) {
            const N_(js_e) e = {at[k], bt[k], eat[k], ebt[k]};
            const N_(js_uv) uv = N_(js_log_v)(e, pa, pb, la, lb);
            kp += e.ea * uv.u;
            kq += e.eb * uv.v;
            at[k] = uv.u;
            bt[k] = uv.v;
        }
        const VD kpd = __builtin_convertvector(kp, VD) / sad, kqd = __builtin_convertvector(kq, VD) / sbd;
        const VD l = N_(dv_fix_lanes_d)(beta * kpd + (1.0 - beta) * kqd, fin, none);
        for (int j = 0; j < nr; j++) loss[r0 + j] = l[j];
        if (!ga && !gb) continue;
        /* as js_row_path's: ga = (u - Kp) ea gpa, gb = (v - Kq) eb gqb */
        const VD wa = p->gscale_p * beta / sad, wb = p->gscale_q * (1.0 - beta) / sbd;
        const V gpa = __builtin_convertvector(wa, V), gqb = __builtin_convertvector(wb, V);
        const V kpg = __builtin_convertvector(-kpd * wa, V), kqg = __builtin_convertvector(-kqd * wb, V);
        for (int64_t k = 0; k < C; k++) {
            at[k] = N_(dv_fix_lanes)(N_(dv_fma)(at[k], gpa, kpg) * eat[k], fin, none);
            bt[k] = N_(dv_fix_lanes)(N_(dv_fma)(bt[k], gqb, kqg) * ebt[k], fin, none);
        }
        if (ga) N_(block_store_t)(ga + r0 * C, nr, C, at);
        if (gb) N_(block_store_t)(gb + r0 * C, nr, C, bt);
    }
}

static void N_(js_rows)(const T *a, const T *b, T *ga, T *gb, int64_t n,
                        const fl_div_params *p, double *loss, T *scratch) {
    if (!(p->beta > 0.0 && p->beta < 1.0) || p->C > FL_MID_C)
        N_(js_row_path)(a, b, ga, gb, n, p, loss, scratch);
    else if (N_(small_rows)(p->C))
        N_(js_small)(a, b, ga, gb, n, p, loss);
    else
        N_(js_mid)(a, b, ga, gb, n, p, loss);
}
