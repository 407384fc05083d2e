/* C floors of the SVA rows (issue 21), in the style of shared/bench/ref_dma.c: the least work each
 * operation needs, in flat arenas, no locks, no model. Library entry points only (there is no
 * standalone program); every per-operation helper is static inline always_inline, so each pass gets
 * the code a standalone program's loop would.
 *   rs_setup / rs_read_pass:   PAGES 4K pages at BASE + i*4K -> arena i*4K in 4-level IA-32e tables
 *                              (P|RW|US at every level); a read walks them checking P and U/S at each
 *                              level (R/W too for writes), sets A (and D on a write leaf) where clear,
 *                              and copies LEN bytes from the arena (SvaWalk1K / SvaWalk64K).
 *   ra_setup / ra_read_pass:   a 256-entry ATC keyed by (PASID, page) in a 512-slot open-addressed
 *                              table filled for PAGES pages; a read looks its page up, checks R and
 *                              copies LEN bytes (AtcHit).
 *   rq_setup / rq_round_pass:  a page request round trip: the device's translation finds no PML4
 *                              entry, sends a page request; the unit writes the 32-byte descriptor at
 *                              PQT and sets PPR; software clears PPR, reads PQH..PQT, writes a page
 *                              group response (type 9) and a wait descriptor (type 5) at the
 *                              invalidation queue's tail and moves PQH; the unit processes the queue,
 *                              hands the response to the device and writes the wait status, which
 *                              software sees (PageRequestRoundTrip).
 *   rb_bind_unbind_pass:       SVA bind (the 64-byte first-level PASID entry) and unbind (entry
 *                              cleared, PASID-cache, PASID-IOTLB and PASID device-TLB invalidations,
 *                              each with its wait descriptor, then intel_svm_drain_prq's fenced wait,
 *                              PASID-IOTLB, PASID device-TLB and draining wait, all written at the
 *                              queue's tail) of one PASID (SvaBindUnbind).
 *   gcc -O2 -march=native -shared -fPIC -o libref_sva.so ref_sva_shim.c */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ADDR 0x000ffffffffff000ull
#define F_P 1ull
#define F_RW 2ull
#define F_US 4ull
#define F_A 0x20ull
#define F_D 0x40ull
#define AI static inline __attribute__((always_inline))

/* ---- first-level walk ---- */
static uint64_t *fl_tab;
static size_t fl_nf;
static uint64_t fl_root;
static uint8_t *fl_mem;

static uint64_t fl_alloc(void) { uint64_t i = fl_nf++; memset(fl_tab + i * 512, 0, 4096); return i; }
AI uint64_t *FT(uint64_t i) { return fl_tab + i * 512; }

static void fl_map(uint64_t va, uint64_t pa) {
  uint64_t t = fl_root;
  for (int l = 4; l > 1; l--) {
    uint64_t *e = &FT(t)[(va >> (12 + 9 * (l - 1))) & 511];
    if (!(*e & F_P)) *e = (fl_alloc() << 12) | F_P | F_RW | F_US;
    t = (*e & ADDR) >> 12;
  }
  FT(t)[(va >> 12) & 511] = (pa & ADDR) | F_P | F_RW | F_US;
}

/* A user request's walk: every level present and user, writable for a write; A set on each
 * entry used and D on a written leaf, each only where clear (the hardware's locked update is left
 * out: no locks). ~0 when the walk refuses. */
AI uint64_t fl_walk(uint64_t va, int write) {
  const uint64_t need = F_P | F_US | (write ? F_RW : 0);
  uint64_t t = fl_root;
  for (int l = 4; l > 1; l--) {
    uint64_t *e = &FT(t)[(va >> (12 + 9 * (l - 1))) & 511];
    uint64_t v = *e;
    if ((v & need) != need) return ~0ull;
    if (!(v & F_A)) *e = v | F_A;
    t = (v & ADDR) >> 12;
  }
  uint64_t *e = &FT(t)[(va >> 12) & 511];
  uint64_t v = *e;
  if ((v & need) != need) return ~0ull;
  uint64_t set = F_A | (write ? F_D : 0);
  if ((v & set) != set) *e = v | set;
  return (v & ADDR) | (va & 4095);
}

/* PAGES pages at BASE + i*4K -> arena i*4K, arena bytes 1 (as the model's pages); 0 on success. */
int rs_setup(size_t pages, uint64_t base) {
  free(fl_tab);
  free(fl_mem);
  fl_nf = 0;
  fl_tab = aligned_alloc(4096, (pages / 512 + pages / 262144 + 16) * 4096ull);
  fl_mem = aligned_alloc(4096, pages * 4096ull);
  if (!fl_tab || !fl_mem) return 1;
  fl_root = fl_alloc();
  memset(fl_mem, 1, pages * 4096ull);
  for (size_t i = 0; i < pages; i++) fl_map(base + i * 4096, i * 4096);
  return 0;
}

/* N reads of LEN bytes; the sum of each read's first byte, 0 when a walk refused. */
uint64_t rs_read_pass(const uint64_t *iv, size_t n, size_t len, uint8_t *dst) {
  uint64_t sink = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t pa = fl_walk(iv[i], 0);
    if (pa == ~0ull) return 0;
    memcpy(dst, fl_mem + pa, len);
    sink += dst[0];
  }
  return sink;
}

/* ---- ATC ---- */
#define ATC_SLOTS 512
struct atc_entry { uint64_t page; uint64_t base; uint64_t size; uint64_t output; uint32_t tag; uint8_t valid, r, w; };
static struct atc_entry atc[ATC_SLOTS];
static uint8_t *atc_mem;

AI uint32_t atc_hash(uint32_t tag, uint64_t page) { return (uint32_t)(((page ^ ((uint64_t)tag << 20)) * 0x9E3779B97F4A7C15ull) >> 55); }

AI struct atc_entry *atc_find(uint32_t tag, uint64_t page) {
  for (uint32_t h = atc_hash(tag, page);; h = (h + 1) & (ATC_SLOTS - 1)) {
    struct atc_entry *e = &atc[h];
    if (!e->valid) return e;
    if (e->page == page && e->tag == tag) return e;
  }
}

/* PAGES (at most 256) read-write translations BASE + i*4K -> arena i*4K for TAG; 0 on success. */
int ra_setup(size_t pages, uint64_t base, uint32_t tag) {
  if (pages > 256) return 1;
  free(atc_mem);
  memset(atc, 0, sizeof atc);
  atc_mem = aligned_alloc(4096, pages * 4096ull);
  if (!atc_mem) return 1;
  memset(atc_mem, 1, pages * 4096ull);
  for (size_t i = 0; i < pages; i++) {
    uint64_t va = base + i * 4096;
    struct atc_entry *e = atc_find(tag, va >> 12);
    *e = (struct atc_entry){ va >> 12, va, 4096, i * 4096, tag, 1, 1, 1 };
  }
  return 0;
}

/* N reads of LEN bytes through the ATC; 0 when a page missed. */
uint64_t ra_read_pass(const uint64_t *iv, size_t n, size_t len, uint8_t *dst, uint32_t tag) {
  uint64_t sink = 0;
  for (size_t i = 0; i < n; i++) {
    struct atc_entry *e = atc_find(tag, iv[i] >> 12);
    if (!e->valid || !e->r) return 0;
    memcpy(dst, atc_mem + e->output + (iv[i] - e->base), len);
    sink += dst[0];
  }
  return sink;
}

/* ---- page request round trip ---- */
#define PRQ_BYTES 4096ull
#define IQ_BYTES 8192ull
static uint64_t *prq, *iq;
static uint64_t pqh, pqt, prs, iqh, iqt;
static volatile uint32_t wait_status;
static uint64_t rq_pml4[512];
struct pending { uint64_t page; uint32_t pasid; int32_t response; };
static struct pending pend[512];
static uint32_t next_prgi;

int rq_setup(void) {
  free(prq);
  free(iq);
  prq = aligned_alloc(4096, PRQ_BYTES);
  iq = aligned_alloc(4096, IQ_BYTES);
  if (!prq || !iq) return 1;
  memset(prq, 0, PRQ_BYTES);
  memset(iq, 0, IQ_BYTES);
  memset(rq_pml4, 0, sizeof rq_pml4);
  memset(pend, 0, sizeof pend);
  pqh = pqt = prs = iqh = iqt = 0;
  next_prgi = 0;
  return 0;
}

/* The unit runs the invalidation queue from head to tail. */
AI void rq_process_iq(void) {
  while (iqh != iqt) {
    const uint64_t *d = iq + iqh / 8;
    switch (d[0] & 0xF) {
    case 9: { /* page group response: to the device */
      uint32_t prgi = (uint32_t)((d[1] >> 3) & 0x1FF);
      if ((d[0] >> 4) & 1) { if (pend[prgi].pasid != (uint32_t)(d[0] >> 32)) break; }
      pend[prgi].response = (int32_t)((d[0] >> 12) & 0xF);
      break;
    }
    case 5: /* invalidation wait with status write */
      if ((d[0] >> 5) & 1) wait_status = (uint32_t)(d[0] >> 32);
      break;
    }
    iqh = (iqh + 32) & (IQ_BYTES - 1);
  }
}

AI void iq_put(uint64_t q0, uint64_t q1) {
  uint64_t *d = iq + iqt / 8;
  d[0] = q0; d[1] = q1; d[2] = 0; d[3] = 0;
  iqt = (iqt + 32) & (IQ_BYTES - 1);
}

/* N round trips for the pages of IV with PASID and requester id RID; the number answered, 0 when a
 * step failed (a queue full, an entry present, no response reaching the device). */
uint64_t rq_round_pass(const uint64_t *iv, size_t n, uint32_t pasid, uint16_t rid) {
  uint64_t done = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t page = iv[i] & ~4095ull;
    /* device: translation request; the first-level walk stops at a non-present PML4 entry */
    if (rq_pml4[(page >> 39) & 511] & F_P) return 0;
    uint32_t prgi = next_prgi;
    next_prgi = (next_prgi + 1) & 0x1FF;
    pend[prgi] = (struct pending){ page, pasid, -1 };
    /* unit: the descriptor at PQT unless full (one slot kept free) */
    if (((pqt + 32) & (PRQ_BYTES - 1)) == pqh) return 0;
    uint64_t *d = prq + pqt / 8;
    d[0] = 1 | (1ull << 8) | ((uint64_t)rid << 16) | ((uint64_t)pasid << 32);
    d[1] = page | 1 | 4 | ((uint64_t)prgi << 3);
    d[2] = 0; d[3] = 0;
    pqt = (pqt + 32) & (PRQ_BYTES - 1);
    prs |= 1;
    /* software: clear PPR, read PQH..PQT, answer each last-in-group request with Success */
    prs &= ~1ull;
    while (pqh != pqt) {
      const uint64_t *r = prq + pqh / 8;
      uint64_t rpasid = r[0] >> 32, rrid = (r[0] >> 16) & 0xFFFF, pp = (r[0] >> 8) & 1;
      uint64_t rprgi = (r[1] >> 3) & 0x1FF, lpig = (r[1] >> 2) & 1;
      if (lpig) {
        iq_put(9 | (pp << 4) | (0ull << 12) | (rrid << 16) | (rpasid << 32), 4 | (rprgi << 3));
        iq_put(5 | (1ull << 5) | ((uint64_t)(uint32_t)(i + 1) << 32), (uint64_t)(uintptr_t)&wait_status);
      }
      pqh = (pqh + 32) & (PRQ_BYTES - 1);
    }
    rq_process_iq();
    if (wait_status != (uint32_t)(i + 1)) return 0;
    /* device: the response arrived */
    if (pend[prgi].response != 0) return 0;
    done++;
  }
  return done;
}

/* ---- SVA bind/unbind ---- */
static uint64_t pasid_table[64 * 8] __attribute__((aligned(4096)));

/* N binds and unbinds of PASID to the first-level root PGD under DID for requester SID; the queue
 * descriptors written. */
uint64_t rb_bind_unbind_pass(size_t n, uint32_t pasid, uint64_t pgd, uint16_t did, uint64_t q1_flags, uint16_t sid) {
  uint64_t written = 0;
  uint64_t *e = pasid_table + (pasid & 63) * 8;
  for (size_t i = 0; i < n; i++) {
    /* bind: q0 P | AW | PGTT=001, q1 DID | flags, q2 FLPTR, the rest 0 */
    e[1] = did | q1_flags;
    e[2] = pgd;
    e[3] = e[4] = e[5] = e[6] = e[7] = 0;
    e[0] = 1 | (2ull << 2) | (1ull << 6);
    /* unbind: clear the entry, then PASID cache (type 7, PASID-selective), P_IOTLB (type 6, all of
     * the PASID) and PASID device-TLB (type 8, the whole space) each followed by a wait */
    memset(e, 0, 64);
    iq_put(7 | (1ull << 4) | ((uint64_t)did << 16) | ((uint64_t)pasid << 32), 0);
    iq_put(5 | (1ull << 5) | (1ull << 32), (uint64_t)(uintptr_t)&wait_status);
    iq_put(6 | (1ull << 4) | ((uint64_t)did << 16) | ((uint64_t)pasid << 32), 0);
    iq_put(5 | (1ull << 5) | (1ull << 32), (uint64_t)(uintptr_t)&wait_status);
    iq_put(8 | ((uint64_t)sid << 16) | ((uint64_t)pasid << 32), 0x7FFFFFFFFFFFF800ull);
    iq_put(5 | (1ull << 5) | (1ull << 32), (uint64_t)(uintptr_t)&wait_status);
    /* the PRQ drain (the device has PRI): a fenced wait, P_IOTLB, one page of the PASID device-TLB,
     * then a wait with PD (page request drain) */
    iq_put(5 | (1ull << 6) | (2ull << 32), 0);
    iq_put(6 | (1ull << 4) | ((uint64_t)did << 16) | ((uint64_t)pasid << 32), 0);
    iq_put(8 | ((uint64_t)sid << 16) | ((uint64_t)pasid << 32), 0);
    iq_put(5 | (1ull << 5) | (1ull << 7) | (1ull << 32), (uint64_t)(uintptr_t)&wait_status);
    iqh = iqt;
    written += 10;
  }
  return written;
}
