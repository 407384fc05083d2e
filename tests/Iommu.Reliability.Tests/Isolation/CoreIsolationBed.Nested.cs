using System.Buffers.Binary;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// The nested domain of the core isolation property and the request attributes: a nest parent that maps
/// the guest memory the property owns, a nested domain whose stage-1 leaves the ops write as a guest
/// would (IA-32e entries in guest memory, through the parent's mapping), its user invalidations, and
/// DMA through it checked against every translation the model allows.
/// </summary>
internal sealed partial class CoreIsolationBed
{
    // Supervisor requests need SRE in the PASID entry: the driver sets it for every PASID but
    // RID2PASID exactly when the unit has ECAP.SRS (second level) and always on the first level (where
    // it refuses a unit without SRS); ERE is never set, so an instruction fetch with PASID faults.
    private string? PasidGate(ModelDevice m, DmaRequestAttributes attrs)
    {
        if ((attrs & DmaRequestAttributes.Privileged) != 0 && !UnitConfig(m.Index).SupervisorRequests)
        {
            return "a supervisor request needs SRE (the unit has no ECAP.SRS)";
        }

        return (attrs & DmaRequestAttributes.Execute) != 0 ? "an execute request needs ERE, which the driver never sets" : null;
    }

    private VtD.Hardware.VtdConfig UnitConfig(int dev) => dev % 2 == 0 || Config.Vtd1 is null || Config.Units == 1 ? Config.Vtd : Config.Vtd1;

    private bool NestAlloc(NestAllocOp op)
    {
        if (_nested is not null)
        {
            return false;
        }

        Errno expected = Config.BothStages ? Errno.None : Errno.EOPNOTSUPP;
        Expect(expected, Driver.DomainAllocNestParent(_pci, out DmarDomain? parent), "alloc nest parent");
        if (expected != Errno.None)
        {
            return true;
        }

        if (parent!.UseFirstLevel)
        {
            throw Fail("the nest parent is on the first level");
        }

        var np = new ModelDomain("np", parent, identity: false, superpages: false);
        foreach ((ulong gpa, ulong pa, ulong size, IommuProt prot) in (ReadOnlySpan<(ulong, ulong, ulong, IommuProt)>)
            [(TablesGpa, TablesPa, 4 * ModelDomain.Sz4K, IommuProt.Read | IommuProt.Write), (RwGpa, RwPa, 8 * ModelDomain.Sz4K, IommuProt.Read | IommuProt.Write), (RoGpa, RoPa, 4 * ModelDomain.Sz4K, IommuProt.Read)])
        {
            Expect(Errno.None, _iommu.Map(parent, gpa, pa, size, prot), $"map np {Hex(gpa)}");
            np.Map(gpa, pa, size, prot);
        }

        // The guest's upper levels, A clear: PML4[0] -> PDPT, PDPT[4] -> PD, PD[0] -> PT.
        ulong path = FlP | (op.PathWrite ? FlRw : 0) | (op.PathUser ? FlUs : 0);
        for (int i = 0; i < 4; i++)
        {
            _platform.Memory.Fill(TablesPa + ((ulong)i * ModelDomain.Sz4K), ModelDomain.Sz4K, 0);
        }

        _platform.Memory.WriteUInt64(GuestTableEntry(0, 0), (TablesGpa + ModelDomain.Sz4K) | path);
        _platform.Memory.WriteUInt64(GuestTableEntry(1, 4), (TablesGpa + (2 * ModelDomain.Sz4K)) | path);
        _platform.Memory.WriteUInt64(GuestTableEntry(2, 0), (TablesGpa + (3 * ModelDomain.Sz4K)) | path);

        // Every leaf starts present, user and writable, page i at data page i.
        var nest = new NestModel(np, op.Flags, op.PathUser, op.PathWrite);
        for (int i = 0; i < Stage1Pages; i++)
        {
            nest.Leaves[i] = TargetGpa(i) | FlP | FlRw | FlUs;
            _platform.Memory.WriteUInt64(GuestTableEntry(3, i), nest.Leaves[i]);
        }

        Expect(Errno.None, Driver.DomainAllocNested(parent, new IommuHwptVtdS1(op.Flags, TablesGpa, 48), out DmarDomain? nested), "alloc nested");
        _nested = new ModelDomain("nd", nested!, identity: false, superpages: false) { Nest = nest };
        return true;
    }

    // The host address of entry `index` of guest table `table` (0 PML4, 1 PDPT, 2 PD, 3 PT), through the parent.
    private static ulong GuestTableEntry(int table, int index) => TablesPa + ((ulong)table * ModelDomain.Sz4K) + ((ulong)index * 8);

    private bool NestAttach(int dev)
    {
        ModelDevice m = _devs[dev];
        if (_nested is not { Nest: { } n } nd || m.Nested || m.Rid != m.Default || m.PasidSlots.Count != 0
            || Array.Exists(_slots, x => x is not null && x.Links.ContainsKey(dev)))
        {
            return false; // iommufd owns the device only when nothing else of the core's is attached
        }

        Errno expected = TooManyLevels(nd, dev) ? Errno.EINVAL : Errno.None;
        Expect(expected, Driver.AttachNestedDev((DmarDomain)nd.Real, m.Real), $"nested attach dev{dev}");
        if (expected == Errno.None)
        {
            n.Parent.Levels = Math.Min(n.Parent.Levels, UnitLevels(dev));
            m.Rid.DropStale();
            NoteStale(m.Rid);
            m.Rid = nd;
            m.Nested = true;
            m.AuxEnabled = false;
        }

        return true;
    }

    private static ulong TargetGpa(int target) => target switch
    {
        < 8 => RwGpa + ((ulong)target * ModelDomain.Sz4K),
        < 12 => RoGpa + ((ulong)(target - 8) * ModelDomain.Sz4K),
        _ => UnmappedGpa,
    };

    private bool Stage1Set(Stage1SetOp op)
    {
        if (_nested?.Nest is not { } n)
        {
            return false;
        }

        ulong old = n.Leaves[op.Page];
        ulong leaf = TargetGpa(op.Target) | (op.Present ? FlP : 0) | (op.Write ? FlRw : 0) | (op.User ? FlUs : 0) | (op.Xd ? FlXd : 0);
        _platform.Memory.WriteUInt64(GuestTableEntry(3, op.Page), leaf);
        // An identical rewrite counts too: it clears A and D in memory, and a translation the unit cached from the
        // earlier write keeps serving without walking the leaf again, so A stays clear until an invalidation (found
        // by a sample of the mixed-stage property: a privileged execute read hit the IOTLB after such a rewrite).
        if ((old & FlP) != 0)
        {
            n.Stale[op.Page].Add(old);
        }

        n.Leaves[op.Page] = leaf;
        n.Written[op.Page] = false;
        return op.Inv == Stage1Inv.None || Stage1Invalidate(op.Inv == Stage1Inv.All ? -1 : op.Page);
    }

    // cache_invalidate_user: one page (leaf) or everything; afterwards only the current leaves translate.
    private bool Stage1Invalidate(int page)
    {
        NestModel n = _nested!.Nest!;
        IommuHwptVtdS1Invalidate req = page < 0
            ? new IommuHwptVtdS1Invalidate(0, ulong.MaxValue, IommuVtdInv.None)
            : new IommuHwptVtdS1Invalidate(Stage1Base + ((ulong)page * ModelDomain.Sz4K), 1, IommuVtdInv.Leaf);
        Expect(Errno.None, Driver.CacheInvalidateUser((DmarDomain)_nested.Real, [req], out int done), "cache_invalidate_user");
        if (done != 1)
        {
            throw Fail($"cache_invalidate_user processed {done} of 1 requests");
        }

        for (int i = 0; i < Stage1Pages; i++)
        {
            if (page < 0 || i == page)
            {
                n.Stale[i].Clear();
            }
        }

        return true;
    }

    // What a request does through one stage-1 leaf: the first-level rules (U/S unless supervisor, R/W
    // for user writes and for supervisor writes with WPE, XD ignored with NXE = 0), then the parent's
    // second level (R/W) for the page's GPA.
    private static (DmaStatus Status, ulong Pa, string Why) NestedOutcome(NestModel n, ulong leaf, bool write, DmaRequestAttributes attrs, bool hasPasid, ulong offset)
    {
        bool sre = (n.Flags & IommuVtdS1.Sre) != 0;
        bool wpe = sre && (n.Flags & IommuVtdS1.Wpe) != 0;
        bool supervisor = (attrs & DmaRequestAttributes.Privileged) != 0;
        if (hasPasid && supervisor && !sre)
        {
            return (DmaStatus.Fault, 0, "supervisor without SRE");
        }

        if (hasPasid && (attrs & DmaRequestAttributes.Execute) != 0)
        {
            return (DmaStatus.Fault, 0, "execute without ERE");
        }

        if ((leaf & FlP) == 0)
        {
            return (DmaStatus.Fault, 0, "stage-1 leaf not present");
        }

        bool user = n.PathUser && (leaf & FlUs) != 0;
        bool rw = n.PathWrite && (leaf & FlRw) != 0;
        if (!supervisor && !user)
        {
            return (DmaStatus.Fault, 0, "user request on a supervisor page");
        }

        if (write && !rw && (!supervisor || wpe))
        {
            return (DmaStatus.Fault, 0, "write to a read-only stage-1 page");
        }

        ulong gpa = leaf & FlAddr;
        if (!n.Parent.TryFind(gpa, out _, out _, out ulong pa, out IommuProt prot) || (write && (prot & IommuProt.Write) == 0))
        {
            return (DmaStatus.Fault, 0, $"the parent does not map gpa {Hex(gpa)} {(write ? "writable" : string.Empty)}");
        }

        return (DmaStatus.Ok, pa + offset, $"gpa {Hex(gpa)} -> pa {Hex(pa)}");
    }

    private void NestedDma(DmaOp op, ModelDevice m, uint? pasid, ulong iova, DmaRequestAttributes attrs)
    {
        NestModel n = _nested!.Nest!;
        ulong rel = iova - Stage1Base;
        int page = iova >= Stage1Base && rel < Stage1Pages * ModelDomain.Sz4K ? (int)(rel / ModelDomain.Sz4K) : -1;
        ulong offset = iova & (ModelDomain.Sz4K - 1);
        var allowed = new List<(DmaStatus Status, ulong Pa, string Why)>();
        if (page < 0)
        {
            allowed.Add((DmaStatus.Fault, 0, "outside the stage-1 table"));
        }
        else
        {
            allowed.Add(NestedOutcome(n, n.Leaves[page], op.Write, attrs, pasid is not null, offset));
            foreach (ulong old in n.Stale[page])
            {
                allowed.Add(NestedOutcome(n, old, op.Write, attrs, pasid is not null, offset));
            }
        }

        Probes++;
        string what = $"dma_{(op.Write ? "write" : "read")} dev{m.Index} {attrs} pasid {(pasid is null ? "-" : pasid.Value)} iova {Hex(iova)} through nd "
            + $"(model: {string.Join(" or ", allowed.Select(a => $"{a.Status} {Hex(a.Pa)} ({a.Why})"))})";
        Span<byte> buf = stackalloc byte[DmaLength];
        ulong pattern = ++_pattern;
        DmaResult r;
        if (op.Write)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(buf, pattern);
            r = m.Real.DmaWrite(pasid, iova, buf, op.Attrs);
        }
        else
        {
            foreach ((DmaStatus st, ulong pa, _) in allowed)
            {
                if (st == DmaStatus.Ok)
                {
                    _platform.Memory.WriteUInt64(pa, pattern);
                }
            }

            r = m.Real.DmaRead(pasid, iova, buf, op.Attrs);
        }

        if (!allowed.Exists(a => a.Status == r.Status && (r.Status != DmaStatus.Ok || a.Pa == r.Address)))
        {
            throw Fail($"{what}: got {r.Status} (pa {Hex(r.Address)}, fault reason 0x{r.FaultReason:x})");
        }

        _nestedProbes++;
        if (r.Status != allowed[0].Status || (r.Status == DmaStatus.Ok && r.Address != allowed[0].Pa))
        {
            _nestedStale++;
        }

        if (r.Status == DmaStatus.Ok)
        {
            ProbesOk++;
            _nestedOk++;
            ulong seen = op.Write ? _platform.Memory.ReadUInt64(r.Address) : BinaryPrimitives.ReadUInt64LittleEndian(buf);
            if (r.Transferred != DmaLength || seen != pattern)
            {
                throw Fail($"{what}: {r.Transferred} bytes, {(op.Write ? "memory holds" : "read returned")} {Hex(seen)}, expected {Hex(pattern)}");
            }

            if (op.Write)
            {
                n.Written[page] = true;
            }
        }

        if (page >= 0)
        {
            CheckAccessedDirty(n, page, r.Status == DmaStatus.Ok, op.Write, what);
        }
    }

    // A/D in the guest's tables: D on a leaf only after a write through it succeeded (a failed walk sets
    // none); after a success with nothing stale (so the unit walked the current leaf, now or when it
    // cached it) A on the leaf and on every upper entry, and D on the leaf for a write.
    private void CheckAccessedDirty(NestModel n, int page, bool ok, bool write, string what)
    {
        ulong leaf = _platform.Memory.ReadUInt64(GuestTableEntry(3, page));
        if ((leaf & ~(FlA | FlD | (1UL << 10))) != n.Leaves[page])
        {
            throw Fail($"{what}: the unit changed stage-1 leaf {page} to {Hex(leaf)} (written {Hex(n.Leaves[page])}) beyond A/D");
        }

        if ((leaf & FlD) != 0 && !n.Written[page])
        {
            throw Fail($"{what}: stage-1 leaf {page} has D set ({Hex(leaf)}) with no successful write through it");
        }

        if (!ok || n.Stale[page].Count != 0)
        {
            return;
        }

        ulong needed = FlA | (write ? FlD : 0);
        bool path = (_platform.Memory.ReadUInt64(GuestTableEntry(0, 0)) & _platform.Memory.ReadUInt64(GuestTableEntry(1, 4)) & _platform.Memory.ReadUInt64(GuestTableEntry(2, 0)) & FlA) != 0;
        if ((leaf & needed) != needed || !path)
        {
            throw Fail($"{what}: after a successful {(write ? "write" : "read")} stage-1 leaf {page} is {Hex(leaf)} and the path has{(path ? string.Empty : " not")} A");
        }
    }
}
