/*
 * kiln's Dockerfile front end: text -> syntax tree -> typed instructions -> stage graph.
 *
 * Semantics follow BuildKit's Dockerfile frontend: ../shared/conformance/buildkit holds the
 * cases the tests hold us to. Nothing here prints; errors carry FILE:LINE:COLUMN and the
 * offending source line, warnings are returned as values.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/arena.h"
#include "builder/common/error.h"
#include "builder/common/strbuf.h"

/* ------------------------------------------------------------------------------------ */
/* Syntax tree (parser/syntax.c, parser/dump.c)                                           */
/* ------------------------------------------------------------------------------------ */

/** The longest physical line BuildKit accepts (bufio.MaxScanTokenSize - 1). */
#define DF_MAX_LINE 65535

struct df_heredoc {
        const char *name;     /* the delimiter word, quotes removed */
        const char *content;  /* the body exactly as read, with its newlines */
        size_t content_len;
        unsigned fd;          /* the digit before "<<"; 0 when absent */
        bool expand;          /* no part of the delimiter was quoted: expand the body */
        bool chomp;           /* "<<-": the consumer strips leading tabs */
        unsigned start_line;  /* line of the first body line */
};

/* A flag or argument word. `text` is NUL-terminated but may hold NUL bytes (JSON "\u0000"). */
struct df_arg {
        const char *text;
        size_t len;
        size_t offset;        /* where it starts in the node's `original` (best effort) */
};

/* Maps a stretch of a node's joined text back to the physical line it came from. */
struct df_segment {
        size_t offset;        /* offset in `original` where this physical line's text starts */
        unsigned line;        /* 1-based source line */
        size_t line_offset;   /* byte offset of that text within the source line */
};

/* One instruction in BuildKit's low-level form. */
struct df_node {
        const char *keyword;        /* as written, case kept ("from", "RUN", "foo") */
        const char *original;       /* the instruction after joining continuation lines */
        size_t original_len;
        struct df_arg *flags;       /* leading --name[=value] words, quotes removed */
        size_t n_flags;
        struct df_arg *args;        /* argument words, formed by the instruction's rule */
        size_t n_args;
        struct df_node *trigger;    /* ONBUILD's nested instruction, else NULL */
        struct df_heredoc *heredocs;
        size_t n_heredocs;
        bool json;                  /* arguments came from a JSON array (exec form) */
        bool known;                 /* keyword is a Dockerfile instruction */
        unsigned start_line;        /* first and last physical line, heredoc bodies included */
        unsigned end_line;
        struct df_segment *segments;
        size_t n_segments;
        size_t args_offset;         /* where the text after keyword and flags starts */
};

struct df_warning {
        const char *msg;
        unsigned line;
        unsigned column;
};

struct df_syntax {
        struct kiln_arena arena;    /* owns everything below */
        const char *filename;       /* as given, for messages ("Dockerfile", "-") */
        const char *text;           /* the source, BOM included */
        size_t text_len;
        size_t *line_starts;        /* byte offset of each line; index 0 is line 1 */
        size_t n_lines;
        struct df_node *nodes;
        size_t n_nodes;
        char escape;                /* '\\' or '`' */
        const char *syntax;         /* value of "# syntax=" or NULL */
        const char *check;          /* value of "# check=" or NULL */
        struct df_warning *warnings;
        size_t n_warnings;
};

/**
 * Parses Dockerfile text (a copy is kept). `filename` is used in positions. Fails with PARSE
 * (positioned) on malformed input and LIMIT on a line longer than DF_MAX_LINE. The caller
 * frees the result with df_syntax_free().
 */
int df_parse(const char *filename, const char *text, size_t len, struct df_syntax **ret,
             struct kiln_error **err);

/** Frees a syntax tree; accepts NULL, returns NULL. */
struct df_syntax *df_syntax_free(struct df_syntax *syn);

/** Appends the tree in BuildKit's `result` format: one "(keyword ...)" line per instruction. */
int df_syntax_dump(const struct df_syntax *syn, struct kiln_buf *out, struct kiln_error **err);

/** Appends one node in the dump format, without a newline. */
int df_node_dump(const struct df_node *node, struct kiln_buf *out, struct kiln_error **err);

/** Appends `s` quoted as Go's strconv.Quote does. */
int df_quote(const char *s, size_t len, struct kiln_buf *out, struct kiln_error **err);

/** The source position (1-based line, 1-based character column) of byte `offset` in a node. */
void df_node_position(const struct df_syntax *syn, const struct df_node *node, size_t offset,
                      unsigned *ret_line, unsigned *ret_column);

/** Returns the text of source line `line` (1-based) without its newline. */
const char *df_syntax_line(const struct df_syntax *syn, unsigned line, size_t *ret_len);

/**
 * Sets *err to an error positioned at `offset` in `node` (file, line, column, source line).
 * Returns -1.
 */
int df_error_at_node(struct kiln_error **err, const struct df_syntax *syn, const struct df_node *node,
                     size_t offset, enum kiln_errkind kind, const char *fmt, ...) _printf_(6, 7);

/** Positions an error raised while handling `node` at `offset`, unless it has a position. */
void df_error_locate(struct kiln_error *e, const struct df_syntax *syn, const struct df_node *node,
                     size_t offset);

/** Strips leading tabs from every line of a "<<-" heredoc body. Caller frees. */
char *df_heredoc_chomp(const char *content, size_t len, size_t *ret_len);

/* ------------------------------------------------------------------------------------ */
/* Word expansion (parser/expand.c)                                                       */
/* ------------------------------------------------------------------------------------ */

/* A variable in scope. A variable that is declared but unset is simply not in the list. */
struct df_var {
        char *name;
        char *value;
        bool used;            /* set when an expansion referenced it */
};

/* The variables an expansion sees, with lookup by exact name. Setting replaces. */
struct df_vars {
        struct df_var *items;
        size_t n;
        size_t alloc;
        char **unset_refs;    /* names referenced while unset, each once, in order */
        size_t n_unset_refs;
        size_t alloc_unset_refs;
};

#define DF_VARS_INIT { 0 }

void df_vars_set(struct df_vars *vars, const char *name, const char *value);
void df_vars_setn(struct df_vars *vars, const char *name, size_t name_len, const char *value,
                  size_t value_len);
/** Sets a variable from a "NAME=value" environment entry ("NAME" alone sets it empty). */
void df_vars_set_entry(struct df_vars *vars, const char *entry);
void df_vars_unset(struct df_vars *vars, const char *name);
/** Returns the variable or NULL when unset. */
struct df_var *df_vars_get(const struct df_vars *vars, const char *name);
/** Replaces dst's variables with copies of src's (usage marks are not copied). */
void df_vars_copy(struct df_vars *dst, const struct df_vars *src);
void df_vars_release(struct df_vars *vars);

enum df_expand_flags {
        DF_EXPAND_RAW_QUOTES = 1 << 0,   /* keep quote characters in the output */
        DF_EXPAND_RAW_ESCAPES = 1 << 1,  /* keep escape characters in the output */
        DF_EXPAND_SKIP_UNSET = 1 << 2,   /* leave references to unset variables as written */
        DF_EXPAND_NO_QUOTES = 1 << 3,    /* quotes are ordinary characters */
};

/**
 * Expands one word as BuildKit's shell lexer does (quotes removed, escapes processed,
 * variables substituted, no splitting). `escape` is '\\' or '`'. Referenced variables are
 * marked used in `vars` (which may be NULL: nothing is set) and unset ones recorded.
 * On PARSE failure the error's column is the 1-based byte offset in `word` of the construct
 * that failed and its line is 0, for the caller to place with df_error_locate().
 * *ret is malloc'd and NUL-terminated; *ret_len may be NULL.
 */
int df_expand_word(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                   char **ret, size_t *ret_len, struct kiln_error **err);

/**
 * Expands like df_expand_word(), then splits on whitespace that is not quoted (including
 * whitespace that came from an unquoted variable). *ret_words is a malloc'd array of
 * *ret_n malloc'd strings, NULL-terminated.
 */
int df_expand_words(const char *word, size_t len, char escape, unsigned flags,
                    struct df_vars *vars, char ***ret_words, size_t *ret_n,
                    struct kiln_error **err);

/** Frees a NULL-terminated string vector; accepts NULL, returns NULL. */
char **df_strv_free(char **v);

/* ------------------------------------------------------------------------------------ */
/* .dockerignore (parser/dockerignore.c)                                                  */
/* ------------------------------------------------------------------------------------ */

struct df_ignore;

/**
 * Turns .dockerignore text into its pattern list (BuildKit's ignorefile rules: BOM,
 * '#' comments, trimming, '!' split off, path cleaning, one leading '/' removed).
 * *ret_patterns is a NULL-terminated malloc'd vector of *ret_n strings.
 */
int df_ignore_read(const char *text, size_t len, char ***ret_patterns, size_t *ret_n,
                   struct kiln_error **err);

/** Compiles a pattern list. INVALID for a malformed pattern (a lone "!", an unclosed "["). */
int df_ignore_new(const char *const *patterns, size_t n, struct df_ignore **ret,
                  struct kiln_error **err);

/** Frees a matcher; accepts NULL, returns NULL. */
struct df_ignore *df_ignore_free(struct df_ignore *ig);

/**
 * Decides whether `path` (slash-separated, relative to the context) is excluded: a pattern
 * applies when it matches the path or any of its parent directories, the last applicable
 * pattern wins. INVALID when a pattern turns out to be malformed.
 */
int df_ignore_matches(const struct df_ignore *ig, const char *path, bool *ret_excluded,
                      struct kiln_error **err);

/** Number of patterns in use; whether any is an exclusion ("!..."). */
size_t df_ignore_count(const struct df_ignore *ig);
bool df_ignore_has_exclusions(const struct df_ignore *ig);

/**
 * Loads the ignore file that applies to a build: "<Dockerfile>.dockerignore" beside the
 * Dockerfile when it exists, else ".dockerignore" at the root of the context (read through
 * `context_fd` with RESOLVE_IN_ROOT). `dockerfile_path` may be NULL (e.g. stdin). With no
 * file, *ret is an empty matcher. *ret_source (may be NULL) names the file used, or NULL.
 */
int df_ignore_load(int context_fd, const char *dockerfile_path, struct df_ignore **ret,
                   char **ret_source, struct kiln_error **err);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_syntax *, df_syntax_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_ignore *, df_ignore_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, df_strv_free)
