/* rowset.c — a fully fetched result of text cells. The MySQL backend's
 * prepared statements (whose bound buffers are reused row after row) and
 * the mock fetch whole result sets; this holds them behind the common
 * dbpool_result interface.
 *
 * Every column name and cell value is copied, NUL-terminated, into one
 * growing text buffer and found by its offset, so a result costs a few
 * allocations however many cells it has. A small result (a few columns,
 * a handful of rows, 256 bytes of text) fits in the rowset itself: one
 * allocation in all. */
#include "driver.h"
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RS_INLINE_COLS 4
#define RS_INLINE_CELLS 16
#define RS_INLINE_TEXT 256
#define RS_NONE SIZE_MAX /* offset of a name not set, or of an SQL NULL */

typedef struct cell {
    size_t off; /* into text; RS_NONE = SQL NULL */
    size_t len;
} cell;

struct dbpool_rowset {
    struct dbpool_result base; /* first: a rowset is a dbpool_result */
    int ncols;
    size_t *names;        /* ncols offsets into text; RS_NONE = not set */
    unsigned char *kinds; /* ncols dbpool_cell_kind; NULL = all text */
    cell *cells;          /* cap_rows * max(ncols, 1) */
    size_t rows, cap_rows;
    size_t cursor; /* 1-based index of the current row; 0 = before the first */
    char *text;    /* every name and value, NUL-terminated, back to back */
    size_t text_len, text_cap;
    size_t inline_names[RS_INLINE_COLS];
    cell inline_cells[RS_INLINE_CELLS];
    char inline_text[RS_INLINE_TEXT];
};

static const dbpool_result_ops rowset_ops;

static size_t width(const dbpool_rowset *rs) { return rs->ncols > 0 ? (size_t)rs->ncols : 1; }

dbpool_rowset *dbpool__rowset_new(int ncols) {
    if (ncols < 0)
        return NULL;
    dbpool_rowset *rs = malloc(sizeof *rs);
    if (!rs)
        return NULL;
    rs->base.ops = &rowset_ops;
    rs->base.lease = NULL;
    rs->ncols = ncols;
    rs->names = rs->inline_names;
    rs->kinds = NULL;
    if (ncols > RS_INLINE_COLS && !(rs->names = malloc((size_t)ncols * sizeof *rs->names))) {
        free(rs);
        return NULL;
    }
    for (int i = 0; i < ncols; i++)
        rs->names[i] = RS_NONE;
    rs->cells = rs->inline_cells;
    rs->rows = 0;
    rs->cap_rows = RS_INLINE_CELLS / width(rs);
    rs->cursor = 0;
    rs->text = rs->inline_text;
    rs->text_len = 0;
    rs->text_cap = RS_INLINE_TEXT;
    return rs;
}

/* Move *buf to a heap block of `size` bytes keeping its first `used`: out
 * of the rowset's inline storage the first time, by realloc after that. */
static bool grow(void **buf, const void *inline_buf, size_t used, size_t size) {
    void *b;
    if (*buf == inline_buf) {
        b = malloc(size);
        if (b)
            memcpy(b, inline_buf, used);
    } else {
        b = realloc(*buf, size);
    }
    if (!b)
        return false;
    *buf = b;
    return true;
}

/* Copy len bytes and a NUL to the end of the text; their offset, or RS_NONE
 * when memory is short. */
static size_t append_text(dbpool_rowset *rs, const char *s, size_t len) {
    if (len >= SIZE_MAX / 2 - rs->text_len)
        return RS_NONE;
    size_t need = rs->text_len + len + 1;
    if (need > rs->text_cap) {
        size_t cap = rs->text_cap * 2 > need ? rs->text_cap * 2 : need;
        void *t = rs->text;
        if (!grow(&t, rs->inline_text, rs->text_len, cap))
            return RS_NONE;
        rs->text = t;
        rs->text_cap = cap;
    }
    size_t off = rs->text_len;
    if (len)
        memcpy(rs->text + off, s, len);
    rs->text[off + len] = '\0';
    rs->text_len = need;
    return off;
}

int dbpool__rowset_set_column(dbpool_rowset *rs, int col, const char *name) {
    if (col < 0 || col >= rs->ncols)
        return DBPOOL_ERANGE;
    if (!name)
        name = "";
    size_t off = append_text(rs, name, strlen(name));
    if (off == RS_NONE)
        return DBPOOL_ENOMEM;
    rs->names[col] = off;
    return DBPOOL_OK;
}

int dbpool__rowset_set_kind(dbpool_rowset *rs, int col, dbpool_cell_kind kind) {
    if (col < 0 || col >= rs->ncols)
        return DBPOOL_ERANGE;
    if (!rs->kinds && !(rs->kinds = calloc((size_t)rs->ncols, sizeof *rs->kinds)))
        return DBPOOL_ENOMEM;
    rs->kinds[col] = (unsigned char)kind;
    return DBPOOL_OK;
}

int dbpool__rowset_add_row(dbpool_rowset *rs) {
    size_t w = width(rs);
    if (rs->rows == rs->cap_rows) {
        size_t cap = rs->cap_rows >= 8 ? rs->cap_rows * 2 : 16;
        if (cap > SIZE_MAX / sizeof(cell) / w)
            return DBPOOL_ENOMEM;
        void *c = rs->cells;
        if (!grow(&c, rs->inline_cells, rs->rows * w * sizeof(cell), cap * w * sizeof(cell)))
            return DBPOOL_ENOMEM;
        rs->cells = c;
        rs->cap_rows = cap;
    }
    for (size_t i = 0; i < (size_t)rs->ncols; i++)
        rs->cells[rs->rows * w + i] = (cell){RS_NONE, 0};
    rs->rows++;
    return DBPOOL_OK;
}

int dbpool__rowset_set_cell(dbpool_rowset *rs, int col, const char *value, size_t len) {
    if (rs->rows == 0 || col < 0 || col >= rs->ncols)
        return DBPOOL_ERANGE;
    cell *c = &rs->cells[(rs->rows - 1) * (size_t)rs->ncols + (size_t)col];
    *c = (cell){RS_NONE, 0};
    if (!value)
        return DBPOOL_OK;
    size_t off = append_text(rs, value, len);
    if (off == RS_NONE)
        return DBPOOL_ENOMEM;
    *c = (cell){off, len};
    return DBPOOL_OK;
}

dbpool_result *dbpool__rowset_result(dbpool_rowset *rs) { return &rs->base; }

void dbpool__rowset_free(dbpool_rowset *rs) {
    if (!rs)
        return;
    if (rs->cells != rs->inline_cells)
        free(rs->cells);
    if (rs->names != rs->inline_names)
        free(rs->names);
    free(rs->kinds);
    if (rs->text != rs->inline_text)
        free(rs->text);
    free(rs);
}

/* The value of a cell of the current row; NULL for SQL NULL or no row. */
static const cell *current(const dbpool_result *r, int col) {
    const dbpool_rowset *rs = (const dbpool_rowset *)r;
    if (rs->cursor == 0 || rs->cursor > rs->rows || col < 0 || col >= rs->ncols)
        return NULL;
    const cell *c = &rs->cells[(rs->cursor - 1) * (size_t)rs->ncols + (size_t)col];
    return c->off == RS_NONE ? NULL : c;
}

static const char *value_of(const dbpool_result *r, const cell *c) {
    return c ? ((const dbpool_rowset *)r)->text + c->off : NULL;
}

static int rs_next(dbpool_result *r, dbpool_error *e) {
    (void)e;
    dbpool_rowset *rs = (dbpool_rowset *)r;
    if (rs->cursor < rs->rows) {
        rs->cursor++;
        return 1;
    }
    rs->cursor = rs->rows + 1;
    return 0;
}
static int rs_columns(const dbpool_result *r) { return ((const dbpool_rowset *)r)->ncols; }
static const char *rs_column_name(const dbpool_result *r, int col) {
    const dbpool_rowset *rs = (const dbpool_rowset *)r;
    if (col < 0 || col >= rs->ncols || rs->names[col] == RS_NONE)
        return NULL;
    return rs->text + rs->names[col];
}
static bool rs_is_null(const dbpool_result *r, int col) { return current(r, col) == NULL; }
static const char *rs_text(const dbpool_result *r, int col, size_t *len) {
    const cell *c = current(r, col);
    if (len)
        *len = c ? c->len : 0;
    return value_of(r, c);
}
static dbpool_cell_kind kind_of(const dbpool_rowset *rs, int col) {
    return rs->kinds ? (dbpool_cell_kind)rs->kinds[col] : DBPOOL_CELL_TEXT;
}
static int64_t rs_int64(const dbpool_result *r, int col) {
    const cell *c = current(r, col);
    if (!c)
        return 0;
    const char *v = value_of(r, c);
    switch (kind_of((const dbpool_rowset *)r, col)) {
    case DBPOOL_CELL_REAL:
        return dbpool__int64_of_real_text(v);
    case DBPOOL_CELL_BITS:
        return dbpool__int64_of_bits(v, c->len);
    default:
        return strtoll(v, NULL, 10);
    }
}
static double rs_double(const dbpool_result *r, int col) {
    const cell *c = current(r, col);
    if (!c)
        return 0.0;
    const char *v = value_of(r, c);
    if (kind_of((const dbpool_rowset *)r, col) == DBPOOL_CELL_BITS)
        return (double)dbpool__uint_of_bits(v, c->len);
    return dbpool__strtod_c(v, NULL);
}
static void rs_free(dbpool_result *r) { dbpool__rowset_free((dbpool_rowset *)r); }

static const dbpool_result_ops rowset_ops = {
    .next = rs_next,
    .columns = rs_columns,
    .column_name = rs_column_name,
    .is_null = rs_is_null,
    .int64 = rs_int64,
    .dbl = rs_double,
    .text = rs_text,
    .free = rs_free,
};
