"""Writes fork-cases.json (run from this directory): synthetic cases in the kernel-trace schema in which a fork()ed
child uses the inherited container fd (README #17). The values are what the 6.1.192 kernel answers: no mm ownership
check in UNMAP (plain or VADDR), and MAP(VADDR) moves a mapping's locked_vm charge to the caller (vfio_change_dma_owner).
The replay test checks the 5.15 outcome at the divergent steps through its deliberate-difference rules."""
import json, os
HERE = os.path.dirname(os.path.abspath(__file__))
from tracekit import *  # noqa: F401,F403 (the shared step builders)

def child(s): return {**{k: v for k, v in s.items() if k in ("op", "fd")}, "proc": "child", **{k: v for k, v in s.items() if k not in ("op", "fd")}}
FORK = st("FORK")
EXIT = st("EXIT", proc="child")
cases = []
def case(name, desc, steps, buffers=()):
    cases.append({"name": name, "desc": desc, "complete": True, "setup": {"buffers": list(buffers)}, "steps": steps})

case("process.fork_child_unmaps_parent_mapping",
     "The parent maps B0; a fork()ed child UNMAPs it through the inherited container fd (6.1: removed, the parent's locked_vm drops) and maps B1 itself (charged to the child); after the child exits the parent unmaps the child's mapping, then its own",
     prelude() + [mp(va("B0"), I0, 4*P), vmlck(16), FORK] +
     [child(s) for s in (um(I0, 4*P), vmlck(0), mp(va("B1"), 0x200000, 2*P), vmlck(8), st("CLOSE", "G"), st("CLOSE", "C"))] +
     [EXIT, vmlck(0), um(0x200000, 2*P), vmlck(0), um(I0, 4*P, removed=0), vmlck(0)] + ending(),
     [buf("B0", 4*P), buf("B1", 2*P, seed=32)])
case("process.fork_parent_unmaps_range_with_child_mapping",
     "The parent maps B0 at I0 and I0+0x10000; a fork()ed child maps B1 at I0+0x20000 and exits; one parent UNMAP over all three (6.1: all removed) and a MAP over the child's IOVA",
     prelude() + [mp(va("B0"), I0, 4*P), mp(va("B0"), I0 + 0x10000, 2*P, flags=1), vmlck(24), FORK] +
     [child(s) for s in (mp(va("B1"), I0 + 0x20000, 2*P), vmlck(8))] +
     [st("EXIT"), vmlck(24), um(I0, 0x30000, removed=8*P), vmlck(0), mp(va("B0"), I0 + 0x20000, 2*P), vmlck(8)] + ending(),
     [buf("B0", 4*P), buf("B1", 2*P, seed=48)])

# UNMAP(VADDR) by the child: 6.1 marks the parent's mappings vaddr-invalid (no owner check), and a later MAP(VADDR) by the
# child moves their locked_vm charge to the child (vfio_change_dma_owner); 5.15 stops at the parent's first mapping.
case("process.fork_child_unmap_vaddr_parent_mapping",
     "A fork()ed child invalidates the parent's mapping with UNMAP(VADDR) and re-maps it with MAP(VADDR) (6.1: the charge moves to the child), twice; after the child exits the parent invalidates and re-maps it (the charge comes back) and unmaps it",
     prelude() + [mp(va("B0"), I0, 4*P), vmlck(16), FORK] +
     [child(s) for s in (um(I0, 4*P, flags=4), vmlck(0), mp(va("B1"), I0, 4*P, flags=4), vmlck(16),
                         um(I0, 4*P, flags=4), mp(va("B1"), I0, 4*P, flags=4), vmlck(16))] +
     [EXIT, vmlck(0), info(512, avail=65534), um(I0, 4*P, flags=4), mp(va("B0"), I0, 4*P, flags=4), vmlck(16),
      um(I0, 4*P), vmlck(0)] + ending(),
     [buf("B0", 4*P), buf("B1", 4*P, seed=32)])
case("process.fork_child_unmap_vaddr_then_parent_continues",
     "A fork()ed child invalidates both of the parent's mappings with one UNMAP(VADDR) and exits; the parent's UNMAP(VADDR) of one of them is EINVAL (already invalid), its MAP(VADDR) of both works, and everything is usable again",
     prelude() + [mp(va("B0"), I0, 2*P), mp(va("B0", 2*P), I0 + 4*P, 2*P), vmlck(16), FORK] +
     [child(s) for s in (um(I0, 8*P, flags=4, removed=4*P), vmlck(0))] +
     [EXIT, vmlck(16), um(I0, 2*P, flags=4, **err("EINVAL")), mp(va("B1"), I0, 2*P, flags=4), mp(va("B1", 2*P), I0 + 4*P, 2*P, flags=4),
      um(I0, 8*P, flags=4, removed=4*P), mp(va("B0"), I0, 2*P, flags=4), mp(va("B0", 2*P), I0 + 4*P, 2*P, flags=4),
      mp(va("B0"), I0, P, **err("EEXIST")), vmlck(16), info(512, avail=65533), um(I0, 8*P, removed=4*P), vmlck(0)] + ending(),
     [buf("B0", 4*P), buf("B1", 4*P, seed=32)])
case("process.fork_child_unmap_vaddr_mixed_owners",
     "Parent mapping M1, child mapping M2: the child's UNMAP(VADDR) over both after invalidating M2 is EINVAL (6.1 rolls M1 back), over both valid marks both; its MAP(VADDR) of M1 takes the parent's charge, its UNMAP removes both; after it exits the parent's UNMAP finds nothing and a MAP over M2's IOVA works",
     prelude() + [mp(va("B0"), I0, 2*P), vmlck(8), FORK] +
     [child(s) for s in (mp(va("B1"), I0 + 4*P, 2*P), vmlck(8), um(I0 + 4*P, 2*P, flags=4), um(I0, 8*P, flags=4, **err("EINVAL")),
                         mp(va("B1"), I0 + 4*P, 2*P, flags=4), um(I0, 8*P, flags=4, removed=4*P), mp(va("B1", 2*P), I0, 2*P, flags=4), vmlck(16),
                         mp(va("B1"), I0 + 4*P, 2*P, flags=4), um(I0, 8*P, removed=4*P), vmlck(0))] +
     [EXIT, vmlck(0), info(512, avail=65535), um(I0, 8*P, removed=0), vmlck(0), mp(va("B0"), I0 + 4*P, 2*P), vmlck(8)] + ending(),
     [buf("B0", 2*P), buf("B1", 4*P, seed=32)])

print(len(cases), "cases")
doc = {"schema": "vfio-type1-kernel-trace/1",
       "note": "Synthetic cases written from README #17 and spec 4.7 (not recorded): the values are what the 6.1.192 kernel answers (no mm ownership check in UNMAP, plain or VADDR; MAP(VADDR) moves the locked_vm charge to the caller). The replay test checks the 5.15 outcome at the divergent steps through its deliberate-difference rules.",
       "env": {"kernel_release": "6.1.0-27-amd64 (synthetic)", "group": 3, "device": "0000:00:03.0", "page_size": 4096},
       "finished": True, "case_count": len(cases), "cases": cases}
json.dump(doc, open(os.path.join(HERE, "fork-cases.json"), "w"), indent=1)
