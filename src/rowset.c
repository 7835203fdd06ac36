/* rowset.c — a fully fetched result of text cells. The PostgreSQL and
 * MySQL backends fetch whole result sets; this holds them behind the
 * common dbpool_result interface. */
#include "driver.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct cell {
    char *value; /* NULL = SQL NULL */
    size_t len;
} cell;

struct dbpool_rowset {
    struct dbpool_result base; /* first: a rowset is a dbpool_result */
    int ncols;
    char **names;
    cell *cells; /* rows * ncols */
    size_t rows, cap_rows;
    size_t cursor; /* 1-based index of the current row; 0 = before the first */
};

static const dbpool_result_ops rowset_ops;

dbpool_rowset *dbpool__rowset_new(int ncols) {
    if (ncols < 0)
        return NULL;
    dbpool_rowset *rs = calloc(1, sizeof *rs);
    if (!rs)
        return NULL;
    rs->base.ops = &rowset_ops;
    rs->ncols = ncols;
    if (ncols > 0) {
        rs->names = calloc((size_t)ncols, sizeof *rs->names);
        if (!rs->names) {
            free(rs);
            return NULL;
        }
    }
    return rs;
}

int dbpool__rowset_set_column(dbpool_rowset *rs, int col, const char *name) {
    if (col < 0 || col >= rs->ncols)
        return DBPOOL_ERANGE;
    free(rs->names[col]);
    rs->names[col] = dbpool__strdup(name ? name : "");
    return rs->names[col] ? DBPOOL_OK : DBPOOL_ENOMEM;
}

int dbpool__rowset_add_row(dbpool_rowset *rs) {
    if (rs->rows == rs->cap_rows) {
        size_t cap = rs->cap_rows ? rs->cap_rows * 2 : 16;
        size_t width = rs->ncols > 0 ? (size_t)rs->ncols : 1;
        cell *c = realloc(rs->cells, cap * width * sizeof *c);
        if (!c)
            return DBPOOL_ENOMEM;
        rs->cells = c;
        rs->cap_rows = cap;
    }
    for (int i = 0; i < rs->ncols; i++)
        rs->cells[rs->rows * (size_t)rs->ncols + (size_t)i] = (cell){NULL, 0};
    rs->rows++;
    return DBPOOL_OK;
}

int dbpool__rowset_set_cell(dbpool_rowset *rs, int col, const char *value, size_t len) {
    if (rs->rows == 0 || col < 0 || col >= rs->ncols)
        return DBPOOL_ERANGE;
    cell *c = &rs->cells[(rs->rows - 1) * (size_t)rs->ncols + (size_t)col];
    free(c->value);
    c->value = NULL;
    c->len = 0;
    if (!value)
        return DBPOOL_OK;
    c->value = malloc(len + 1);
    if (!c->value)
        return DBPOOL_ENOMEM;
    memcpy(c->value, value, len);
    c->value[len] = '\0';
    c->len = len;
    return DBPOOL_OK;
}

dbpool_result *dbpool__rowset_result(dbpool_rowset *rs) { return &rs->base; }

void dbpool__rowset_free(dbpool_rowset *rs) {
    if (!rs)
        return;
    for (size_t i = 0; i < rs->rows * (size_t)rs->ncols; i++)
        free(rs->cells[i].value);
    free(rs->cells);
    for (int i = 0; i < rs->ncols; i++)
        free(rs->names[i]);
    free(rs->names);
    free(rs);
}

static const cell *current(const dbpool_result *r, int col) {
    const dbpool_rowset *rs = (const dbpool_rowset *)r;
    if (rs->cursor == 0 || rs->cursor > rs->rows || col < 0 || col >= rs->ncols)
        return NULL;
    return &rs->cells[(rs->cursor - 1) * (size_t)rs->ncols + (size_t)col];
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
    return col >= 0 && col < rs->ncols ? rs->names[col] : NULL;
}
static bool rs_is_null(const dbpool_result *r, int col) {
    const cell *c = current(r, col);
    return !c || !c->value;
}
static int64_t rs_int64(const dbpool_result *r, int col) {
    const cell *c = current(r, col);
    return c && c->value ? strtoll(c->value, NULL, 10) : 0;
}
static double rs_double(const dbpool_result *r, int col) {
    const cell *c = current(r, col);
    return c && c->value ? strtod(c->value, NULL) : 0.0;
}
static const char *rs_text(const dbpool_result *r, int col, size_t *len) {
    const cell *c = current(r, col);
    if (len)
        *len = c && c->value ? c->len : 0;
    return c ? c->value : NULL;
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
