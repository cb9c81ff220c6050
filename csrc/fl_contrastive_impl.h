/* Template body (see fl_instantiate.h), instantiated by fl_metric.h next to the
 * metric body: the softmax cross-entropy over the rows and columns of a
 * similarity matrix (InfoNCE / NT-Xent). Matrices are C-contiguous rows; every
 * function works on a range of rows, row groups or columns that the Cython caller
 * hands to one thread; reductions run in float64 over fixed-size blocks
 * (FL_SUM_BLOCK), and column statistics are merged in group order, so results do not
 * depend on the split.
 *
 * Exponentials of x - shift with shift >= x (a maximum or a log-sum-exp) use
 * vexp_le0; a shift that is NaN or +inf (NaN or +inf in the data) takes the
 * general vexp, whose NaN then propagates. */

FL_INL int N_(finite_or_ninf)(T x) { return x == x && x != (T)INFINITY; }

/* ce_group_stats: one group of nr <= FL_CE_GROUP rows of S (nc columns), walked
 * in tiles of FL_CE_COLS columns; each tile is read twice (max, then sum of
 * exponentials), the second time from L2. Writes rlse[r] = logsumexp of row r
 * (online over the tiles) and, with cmax, the group's column statistics:
 * cmax[j] = max over the group's rows, csum[j] = sum exp(S_rj - cmax[j]). */
static void N_(ce_group_stats)(const T *S, int64_t nr, int64_t nc, double *rlse, T *cmax, T *csum) {
    if (!cmax) {
        /* rows only: whole rows, one sequential stream each, the second pass from cache */
        for (int64_t r = 0; r < nr; r++) {
            const T *row = S + r * nc;
            const T m = N_(row_max)(row, nc);
            const T shift = m == -(T)INFINITY ? 0 : m;
            const int fast = N_(finite_or_ninf)(m);
            double s = 0.0;
            for (int64_t b = 0; b < nc; b += FL_SUM_BLOCK) {
                const int64_t end = b + FL_SUM_BLOCK < nc ? b + FL_SUM_BLOCK : nc;
                V acc = N_(vset1)(0);
                if (fast)
                    for (int64_t j = b; j < end; j += W)
                        acc += N_(vexp_le0)(N_(vload_n)(row + j, end - j, -(T)INFINITY) - shift);
                else
                    for (int64_t j = b; j < end; j += W)
                        acc += N_(vexp)(N_(vload_n)(row + j, end - j, -(T)INFINITY) - shift);
                s += N_(vhsum)(acc);
            }
            rlse[r] = (double)m + log(s);
        }
        return;
    }
    T rm[FL_CE_GROUP];
    double rs[FL_CE_GROUP];
    V cm[FL_CE_COLS / W], cs[FL_CE_COLS / W];
    const V ninf = N_(vset1)(-(T)INFINITY), zero = N_(vset1)(0);
    for (int64_t r = 0; r < nr; r++) { rm[r] = -(T)INFINITY; rs[r] = 0.0; }
    for (int64_t c0 = 0; c0 < nc; c0 += FL_CE_COLS) {
        const int64_t cw = nc - c0 < FL_CE_COLS ? nc - c0 : FL_CE_COLS;
        const int64_t nv = (cw + W - 1) / W;
        for (int64_t v = 0; v < nv; v++) { cm[v] = ninf; cs[v] = zero; }
        for (int64_t r = 0; r < nr; r++) {
            const T *row = S + r * nc + c0;
            /* the next row's segment of the tile: prefetched one row ahead (each
             * segment is a separate short stream the hardware prefetcher barely
             * starts on) */
            const int64_t next = r + 2 < nr ? (r + 2) * nc + c0 : (r + 2 - nr) * nc + c0 + FL_CE_COLS;
            V vm = ninf;
            for (int64_t v = 0; v < nv; v++) {
                if ((v * W * (int64_t)sizeof(T)) % 64 == 0) FL_PREFETCH(S, next + v * W, 0);
                V x = N_(vload_n)(row + v * W, cw - v * W, -(T)INFINITY);
                vm = N_(vmax_nan)(vm, x);
                cm[v] = N_(vmax_nan)(cm[v], x);
            }
            const T mc = N_(vhmax_nan)(vm);
            if (mc != mc) rm[r] = mc;
            else if (mc > rm[r]) {
                if (rs[r] > 0) rs[r] *= exp((double)rm[r] - (double)mc);
                rm[r] = mc;
            }
        }
        /* column shifts: the tile maxima (0 for all -inf columns) */
        V csh[FL_CE_COLS / W];
        int cfast = 1;
        for (int64_t v = 0; v < nv; v++) {
            csh[v] = N_(vsel)(cm[v] == -(T)INFINITY, zero, cm[v]);
            for (int k = 0; k < W; k++) cfast &= N_(finite_or_ninf)(cm[v][k]);
        }
        for (int64_t r = 0; r < nr; r++) {
            const T *row = S + r * nc + c0;
            const T shift = rm[r] == -(T)INFINITY ? 0 : rm[r];
            const int rfast = N_(finite_or_ninf)(rm[r]);
            V acc = zero;
            if (rfast && cfast) {
                for (int64_t v = 0; v < nv; v++) {
                    V x = N_(vload_n)(row + v * W, cw - v * W, -(T)INFINITY);
                    acc += N_(vexp_le0)(x - shift);
                    cs[v] += N_(vexp_le0)(x - csh[v]);
                }
            } else {
                for (int64_t v = 0; v < nv; v++) {
                    V x = N_(vload_n)(row + v * W, cw - v * W, -(T)INFINITY);
                    acc += N_(vexp)(x - shift);
                    cs[v] += N_(vexp)(x - csh[v]);
                }
            }
            rs[r] += N_(vhsum)(acc);
        }
        for (int64_t v = 0; v < nv; v++) {
            N_(vstore_n)(cmax + c0 + v * W, cm[v], cw - v * W);
            N_(vstore_n)(csum + c0 + v * W, cs[v], cw - v * W);
        }
    }
    for (int64_t r = 0; r < nr; r++) rlse[r] = (double)rm[r] + log(rs[r]);
}

/* sum_j exp(row_j - shift) over j < n (float64 over FL_SUM_BLOCK pieces; shift >= every
 * row_j), each term times a also added into csum[j]: a row's and the columns' sums of one
 * exponential per element. */
FL_INL double N_(exp_sum_into_cols)(const T *row, int64_t n, T shift, T a, T *csum) {
    double s = 0.0;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t j = b; j < end; j += W) {
            const int64_t nj = end - j;
            V e = N_(vexp_le0)(N_(vload_n)(row + j, nj, -(T)INFINITY) - shift);
            acc += e;
            N_(vstore_n)(csum + j, N_(vload_n)(csum + j, nj, 0) + e * a, nj);
        }
        s += N_(vhsum)(acc);
    }
    return s;
}

/* Fast statistics when every logit is known to lie in [-U, U] with 2U + log(nc) <= 80
 * (the caller's bound from the row norms): then exp(S_rj - U) is a normal number, so
 * the column sums need no maxima: csum[j] = sum over the group's rows of
 * exp(S_rj - U), formed as exp(S_rj - m_r) * exp(m_r - U) from the row's own
 * exponentials. One exponential per element; whole rows, one stream each. */
static void N_(ce_group_stats_bounded)(const T *S, int64_t nr, int64_t nc, double *rlse, T *csum, double U) {
    for (int64_t j = 0; j < nc; j++) csum[j] = 0;
    for (int64_t r = 0; r < nr; r++) {
        const T *row = S + r * nc;
        const T m = N_(row_max)(row, nc);
        rlse[r] = (double)m + log(N_(exp_sum_into_cols)(row, nc, m, (T)exp((double)m - U), csum));
    }
}

/* ce_group_stats_bounded for a symmetric S of which only the lower triangle was
 * computed (BLAS syrk, half the products of a gemm), diagonal excluded (NT-Xent's
 * self-similarity): rows [i0, i0 + nr) of S (nc columns, S points at row i0).
 * rsum[r] = sum over j < i0 + r of exp(S_rj - U) (float64), and the group's record
 * csum[j] = sum over its rows i > j of exp(S_ij - U): the upper triangle's share of
 * row j, merged over the groups by the caller. Each entry of the triangle takes one
 * exponential for both its row and its column. */
static void N_(ce_tri_stats_bounded)(const T *S, int64_t nr, int64_t nc, int64_t i0, double *rsum, T *csum,
                                     double U) {
    for (int64_t j = 0; j < nc; j++) csum[j] = 0;
    for (int64_t r = 0; r < nr; r++) {
        const T *row = S + r * nc;
        rsum[r] = N_(exp_sum_into_cols)(row, i0 + r, (T)U, 1, csum);
    }
}

/* Columns [c0, c1): merges the ng group records (rows of cmax/csum, nc wide) in
 * group order into clse[j] = logsumexp of column j. */
static void N_(ce_col_combine)(const T *cmax, const T *csum, int64_t ng, int64_t nc, int64_t c0,
                               int64_t c1, T *clse) {
    for (int64_t j = c0; j < c1; j += W) {
        const int64_t nj = c1 - j;
        V m = N_(vset1)(-(T)INFINITY);
        for (int64_t g = 0; g < ng; g++) m = N_(vmax_nan)(m, N_(vload_n)(cmax + g * nc + j, nj, 0));
        V shift = N_(vsel)(m == -(T)INFINITY, N_(vset1)(0), m);
        V s = N_(vset1)(0);
        for (int64_t g = 0; g < ng; g++)
            s += N_(vload_n)(csum + g * nc + j, nj, 0) * N_(vexp)(N_(vload_n)(cmax + g * nc + j, nj, 0) - shift);
        N_(vstore_n)(clse + j, shift + N_(vlog)(s), nj);
    }
}

/* Gradient of the logits, in place over rows [r0, r0 + nr) of S (nc columns):
 *   S_ij <- ra exp(S_ij - rlse_i) + cb exp(S_ij - clse_j) - dcoef [j == t(i)],
 * t(i) = (i + pos_off) % period, the positive of row i. rlse is offset to the
 * block (rlse[r] is row r0 + r); clse covers all nc columns. */
static void N_(ce_grad_rows)(T *S, int64_t nr, int64_t nc, int64_t r0, const double *rlse, T ra,
                             const T *clse, T cb, int64_t pos_off, int64_t period, T dcoef) {
    int cfast = 1;
    for (int64_t j = 0; j < nc; j++) cfast &= N_(finite_or_ninf)(clse[j]) && clse[j] != -(T)INFINITY;
    for (int64_t r = 0; r < nr; r++) {
        T *row = S + r * nc;
        const T rl = (T)rlse[r];
        if (cfast && N_(finite_or_ninf)(rl) && rl != -(T)INFINITY) {
            for (int64_t j = 0; j < nc; j += W) {
                const int64_t nj = nc - j;
                V x = N_(vload_n)(row + j, nj, 0);
                V g = ra * N_(vexp_le0)(x - rl) + cb * N_(vexp_le0)(x - N_(vload_n)(clse + j, nj, 0));
                N_(vstore_n)(row + j, g, nj);
            }
        } else {
            for (int64_t j = 0; j < nc; j += W) {
                const int64_t nj = nc - j;
                V x = N_(vload_n)(row + j, nj, 0);
                V g = ra * N_(vexp)(x - rl) + cb * N_(vexp)(x - N_(vload_n)(clse + j, nj, 0));
                N_(vstore_n)(row + j, g, nj);
            }
        }
        row[(r0 + r + pos_off) % period] -= dcoef;
    }
}

/* ce_grad_rows when the logits are bounded as for ce_group_stats_bounded:
 *   S_ij <- e_ij (ra + cb a_i b_j) - dcoef [j == t(i)],
 * e_ij = exp(S_ij - rlse_i), a_i = exp(rlse_i - U), b_j = exp(U - clse_j): one
 * exponential per element (a_i b_j = exp(rlse_i - clse_j) stays within e^+-80).
 * tri: S is symmetric and holds only its lower triangle (BLAS syrk, then symm):
 * row i is written on its columns j < i, its diagonal set to 0 (the excluded
 * self-similarity), its positive subtracted only where it lies there. */
static void N_(ce_grad_rows_bounded)(T *S, int64_t nr, int64_t nc, int64_t r0, const double *rlse, T ra,
                                     const T *b, T cb, double U, int64_t pos_off, int64_t period, T dcoef,
                                     int tri) {
    for (int64_t r = 0; r < nr; r++) {
        T *row = S + r * nc;
        const int64_t i = r0 + r, t = (i + pos_off) % period;
        const int64_t w = tri && i < nc ? i : nc;
        const T rl = (T)rlse[r];
        const T ca = cb * (T)exp(rlse[r] - U);
        for (int64_t j = 0; j < w; j += W) {
            const int64_t nj = w - j;
            V x = N_(vload_n)(row + j, nj, 0);
            V g = N_(vexp_le0)(x - rl) * (ra + ca * N_(vload_n)(b + j, nj, 0));
            N_(vstore_n)(row + j, g, nj);
        }
        if (tri) row[i] = 0;
        if (!tri || t < i) row[t] -= dcoef;
    }
}
