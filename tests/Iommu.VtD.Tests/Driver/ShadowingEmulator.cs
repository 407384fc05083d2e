using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// A test-side model of what a virtual IOMMU with caching mode (QEMU's intel-iommu) does: it keeps a shadow of
/// the guest's second-level mappings per (source id, PASID) and updates it only when the guest invalidates,
/// re-walking the named range of the guest's tables in memory with its own decoder (no model or driver code).
/// </summary>
/// <remarks>
/// <para>Rules, after QEMU's <c>hw/i386/intel_iommu.c</c>: a context-cache invalidation resyncs the named
/// devices (domain-selective ones are performed as global, <c>vtd_context_global_invalidate</c>); an IOTLB
/// invalidation resyncs every address space whose entry, read fresh, carries the DID (domain-selective:
/// whole space, <c>vtd_iotlb_domain_invalidate</c>; page-selective: the 2^AM pages at ADDR,
/// <c>vtd_iotlb_page_invalidate_notify</c>); global ones and SRTP/TE changes resync everything
/// (<c>vtd_address_space_refresh_all</c>). PASID-cache and PASID-based IOTLB invalidations resync the PASID's
/// spaces of that DID (QEMU 8's <c>vtd_pasid_cache_sync</c>, <c>vtd_piotlb_page_invalidate</c>).</para>
/// <para>In scalable mode a context-cache invalidation resyncs only the device's RID_PASID space (what the context
/// entry names); a PASID's entry is picked up from PASID-cache and IOTLB invalidations, as the guest must issue them.</para>
/// <para>Malformed invalidations under caching mode are collected in <see cref="Malformed"/>: DID 0 (reserved for
/// cached not-present entries) in any domain- or page-scoped IOTLB or PASID invalidation, a domain-selective
/// context invalidation of DID 0, a page-selective address not aligned to its 2^AM pages.</para>
/// </remarks>
internal sealed class ShadowingEmulator(PhysicalMemory memory) : IVtdInvalidationObserver
{
    /// <summary>Key for requests without PASID in legacy mode.</summary>
    public const uint NoPasid = uint.MaxValue;

    private const ulong AddrMask = 0x000F_FFFF_FFFF_F000;

    private ulong _root;
    private bool _te;

    /// <summary>The shadow: per (source id, PASID) what the emulator believes the device may reach.</summary>
    public Dictionary<(ushort Sid, uint Pasid), Space> Shadow { get; } = [];

    /// <summary>Invalidations that are not well-formed under caching mode.</summary>
    public List<string> Malformed { get; } = [];

    /// <summary>Every invalidation seen, newest last (for failure messages).</summary>
    public List<string> Log { get; } = [];

    /// <summary>Whether the latched root table is a scalable-mode one.</summary>
    public bool IsScalable => Scalable;

    private bool Scalable => ((_root >> 10) & 3) == 1;

    /// <summary>What a space translates with.</summary>
    public enum SpaceKind
    {
        /// <summary>Second-level translation through the tables at Root.</summary>
        Translated,

        /// <summary>Pass-through.</summary>
        PassThrough,

        /// <summary>First-level or nested: not shadowed (caching mode cannot shadow them from IOTLB invalidations).</summary>
        Other,
    }

    /// <summary>One leaf: IOVA, size, host address and permissions.</summary>
    public readonly record struct Leaf(ulong Iova, ulong Size, ulong Phys, bool Read, bool Write);

    /// <summary>A resolved address space.</summary>
    public sealed record Space(SpaceKind Kind, ushort Did, ulong Root, int Levels)
    {
        /// <summary>Leaves by IOVA.</summary>
        public SortedDictionary<ulong, Leaf> Leaves { get; } = [];
    }

    // ---- observer ----

    /// <inheritdoc/>
    public void OnGlobalCommand(uint command, ulong rootTable, bool translationEnabled)
    {
        bool srtp = (command & (1u << 30)) != 0;
        bool changed = srtp || translationEnabled != _te;
        _root = rootTable;
        _te = translationEnabled;
        if (changed)
        {
            Log.Add($"GCMD {command:X8}");
            ResyncAll();
        }
    }

    /// <inheritdoc/>
    public void OnContextCommand(ulong ccmd) =>
        Context((int)((ccmd >> 61) & 3), (ushort)ccmd, (ushort)(ccmd >> 16), (int)((ccmd >> 32) & 3));

    /// <inheritdoc/>
    public void OnIotlbCommand(ulong iotlb, ulong iva) =>
        Iotlb((int)((iotlb >> 60) & 3), (ushort)(iotlb >> 32), iva & AddrMask, (int)(iva & 0x3F), pasid: null);

    /// <inheritdoc/>
    public void OnDescriptor(ulong q0, ulong q1)
    {
        int type = (int)((q0 & 0xF) | ((q0 >> 5) & 0x70));
        int g = (int)((q0 >> 4) & 3);
        ushort did = (ushort)(q0 >> 16);
        uint pasid = (uint)(q0 >> 32) & 0xF_FFFF;
        switch (type)
        {
            case 1:
                Context(g, did, (ushort)(q0 >> 32), (int)((q0 >> 48) & 3));
                break;
            case 2:
                Iotlb(g, did, q1 & AddrMask, (int)(q1 & 0x3F), pasid: null);
                break;
            case 6:
                Iotlb(g == 3 ? 3 : 2, did, q1 & AddrMask, (int)(q1 & 0x3F), pasid);
                break;
            case 7:
                PasidCache(g, did, pasid);
                break;
            default:
                break; // device-TLB, interrupt entry cache, wait, page response: nothing to shadow
        }
    }

    // ---- invalidation semantics ----

    private void Context(int g, ushort did, ushort sid, int fm)
    {
        Log.Add($"CC g={g} did={did} sid={sid:X4} fm={fm}");
        if (g == 2 && did == 0)
        {
            Malformed.Add($"domain-selective context-cache invalidation of DID 0");
        }

        if (g != 3)
        {
            ResyncAll();
            return;
        }

        ushort ignored = fm switch { 1 => 0x4, 2 => 0x6, 3 => 0x7, _ => 0 };
        for (int low = 0; low < 8; low++)
        {
            if ((low & ~ignored) == 0)
            {
                ResyncDevice((ushort)((sid & ~ignored) | low));
            }
        }
    }

    private void Iotlb(int g, ushort did, ulong addr, int am, uint? pasid)
    {
        Log.Add($"{(pasid is null ? "IOTLB" : $"P_IOTLB pasid={pasid}")} g={g} did={did} addr={addr:X} am={am}");
        if (g == 1 && pasid is null)
        {
            ResyncAll();
            return;
        }

        if (did == 0)
        {
            Malformed.Add($"IOTLB invalidation (g={g}, pasid={pasid}) of DID 0, reserved under caching mode");
        }

        ulong lo = 0, hi = ulong.MaxValue;
        if (g == 3)
        {
            if (am > 52 || (addr & ((1UL << (am + 12)) - 1)) != 0)
            {
                Malformed.Add($"page-selective invalidation at {addr:X} not aligned to its 2^{am} pages");
            }

            lo = addr & ~((1UL << Math.Min(am + 12, 63)) - 1);
            hi = am + 12 >= 64 ? ulong.MaxValue : lo + (1UL << (am + 12)) - 1;
        }

        foreach ((ushort sid, uint p) in AllKeys())
        {
            if (pasid is not null && p != pasid)
            {
                continue;
            }

            Space? fresh = Resolve(sid, p);
            if (fresh is null || fresh.Did != did)
            {
                continue; // QEMU reads the entry fresh and skips address spaces of another domain or none
            }

            if (g == 3 && Shadow.TryGetValue((sid, p), out Space? old) && old.Kind == fresh.Kind && old.Root == fresh.Root && old.Levels == fresh.Levels)
            {
                SyncRange(old, lo, hi);
            }
            else
            {
                Replace(sid, p, fresh);
            }
        }
    }

    private void PasidCache(int g, ushort did, uint pasid)
    {
        Log.Add($"PC g={g} did={did} pasid={pasid}");
        if (g != 3 && did == 0)
        {
            Malformed.Add($"PASID-cache invalidation (g={g}) of DID 0");
        }

        foreach ((ushort sid, uint p) in AllKeys())
        {
            if (p == NoPasid || (g == 1 && p != pasid))
            {
                continue;
            }

            Space? fresh = Resolve(sid, p);
            Shadow.TryGetValue((sid, p), out Space? old);
            if (g == 3 || fresh?.Did == did || old?.Did == did)
            {
                Replace(sid, p, fresh);
            }
        }
    }

    private void ResyncAll()
    {
        Shadow.Clear();
        foreach ((ushort sid, uint p) in FreshKeys())
        {
            Replace(sid, p, Resolve(sid, p));
        }
    }

    private void ResyncDevice(ushort sid)
    {
        if (!ContextEntry(sid, out ulong lo, out ulong hi))
        {
            foreach ((ushort s, uint p) in Shadow.Keys.Where(k => k.Sid == sid).ToList())
            {
                Shadow.Remove((s, p));
            }

            return;
        }

        uint key = Scalable ? (uint)(hi & 0xF_FFFF) : NoPasid;
        Replace(sid, key, Resolve(sid, key));
    }

    private void Replace(ushort sid, uint pasid, Space? fresh)
    {
        if (fresh is null)
        {
            Shadow.Remove((sid, pasid));
            return;
        }

        var s = new Space(fresh.Kind, fresh.Did, fresh.Root, fresh.Levels);
        SyncRange(s, 0, ulong.MaxValue);
        Shadow[(sid, pasid)] = s;
    }

    private void SyncRange(Space s, ulong lo, ulong hi)
    {
        if (s.Kind != SpaceKind.Translated)
        {
            return;
        }

        foreach (ulong k in s.Leaves.Values.Where(l => l.Iova <= hi && l.Iova + l.Size - 1 >= lo).Select(l => l.Iova).ToList())
        {
            s.Leaves.Remove(k);
        }

        Walk(s.Root, s.Levels, 0, lo, hi, leaf => s.Leaves[leaf.Iova] = leaf);
    }

    private List<(ushort, uint)> AllKeys() => FreshKeys().Concat(Shadow.Keys).Distinct().ToList();

    // ---- truth: the tables read fresh ----

    /// <summary>Every address space the tables in memory define now, fully walked.</summary>
    /// <returns>The truth, keyed as <see cref="Shadow"/>.</returns>
    public Dictionary<(ushort Sid, uint Pasid), Space> Truth()
    {
        var t = new Dictionary<(ushort, uint), Space>();
        foreach ((ushort sid, uint p) in FreshKeys())
        {
            Space? r = Resolve(sid, p);
            if (r is not null)
            {
                var s = new Space(r.Kind, r.Did, r.Root, r.Levels);
                if (s.Kind == SpaceKind.Translated)
                {
                    Walk(s.Root, s.Levels, 0, 0, ulong.MaxValue, leaf => s.Leaves[leaf.Iova] = leaf);
                }

                t[(sid, p)] = s;
            }
        }

        return t;
    }

    /// <summary>The shadow's translation of <paramref name="iova"/> for (sid, pasid), or null.</summary>
    /// <param name="sid">Source id.</param>
    /// <param name="pasid">PASID key.</param>
    /// <param name="iova">Address.</param>
    /// <returns>The host address, or null when the shadow has no mapping.</returns>
    public ulong? ShadowTranslate(ushort sid, uint pasid, ulong iova)
    {
        if (!Shadow.TryGetValue((sid, pasid), out Space? s))
        {
            return null;
        }

        if (s.Kind == SpaceKind.PassThrough)
        {
            return iova;
        }

        foreach (Leaf l in s.Leaves.Values)
        {
            if (iova >= l.Iova && iova - l.Iova < l.Size)
            {
                return l.Phys + (iova - l.Iova);
            }
        }

        return null;
    }

    private IEnumerable<(ushort, uint)> FreshKeys()
    {
        if (!_te)
        {
            yield break;
        }

        ulong rt = _root & AddrMask;
        for (int bus = 0; bus < 256; bus++)
        {
            ulong r0 = memory.ReadUInt64(rt + ((ulong)bus * 16));
            ulong r1 = memory.ReadUInt64(rt + ((ulong)bus * 16) + 8);
            if ((r0 & 1) == 0 && (!Scalable || (r1 & 1) == 0))
            {
                continue;
            }

            for (int devfn = 0; devfn < 256; devfn++)
            {
                ushort sid = (ushort)((bus << 8) | devfn);
                if (!ContextEntry(sid, out ulong lo, out ulong hi))
                {
                    continue;
                }

                if (!Scalable)
                {
                    yield return (sid, NoPasid);
                    continue;
                }

                ulong dir = lo & AddrMask;
                int dirEntries = 1 << (int)(((lo >> 9) & 7) + 7);
                for (int d = 0; d < dirEntries; d++)
                {
                    ulong de = memory.ReadUInt64(dir + ((ulong)d * 8));
                    if ((de & 1) == 0)
                    {
                        continue;
                    }

                    for (int i = 0; i < 64; i++)
                    {
                        if ((memory.ReadUInt64((de & AddrMask) + ((ulong)i * 64)) & 1) != 0)
                        {
                            yield return (sid, (uint)((d << 6) | i));
                        }
                    }
                }
            }
        }
    }

    private bool ContextEntry(ushort sid, out ulong lo, out ulong hi)
    {
        lo = hi = 0;
        if (!_te)
        {
            return false;
        }

        ulong rt = _root & AddrMask;
        int bus = sid >> 8, devfn = sid & 0xFF;
        ulong ctx;
        if (Scalable)
        {
            ulong re = memory.ReadUInt64(rt + ((ulong)bus * 16) + (devfn >= 128 ? 8UL : 0));
            if ((re & 1) == 0)
            {
                return false;
            }

            ctx = (re & AddrMask) + ((ulong)(devfn & 127) * 32);
        }
        else
        {
            ulong re = memory.ReadUInt64(rt + ((ulong)bus * 16));
            if ((re & 1) == 0)
            {
                return false;
            }

            ctx = (re & AddrMask) + ((ulong)devfn * 16);
        }

        lo = memory.ReadUInt64(ctx);
        hi = memory.ReadUInt64(ctx + 8);
        return (lo & 1) != 0;
    }

    private Space? Resolve(ushort sid, uint pasid)
    {
        if (!ContextEntry(sid, out ulong lo, out ulong hi))
        {
            return null;
        }

        if (!Scalable)
        {
            if (pasid != NoPasid)
            {
                return null;
            }

            int tt = (int)((lo >> 2) & 3);
            ushort did = (ushort)(hi >> 8);
            return tt == 2
                ? new Space(SpaceKind.PassThrough, did, 0, 0)
                : new Space(SpaceKind.Translated, did, lo & AddrMask, (int)(hi & 7) + 2);
        }

        if (pasid == NoPasid)
        {
            return null;
        }

        int dirEntries = 1 << (int)(((lo >> 9) & 7) + 7);
        if ((pasid >> 6) >= (uint)dirEntries)
        {
            return null;
        }

        ulong de = memory.ReadUInt64((lo & AddrMask) + ((ulong)(pasid >> 6) * 8));
        if ((de & 1) == 0)
        {
            return null;
        }

        ulong pe = (de & AddrMask) + ((ulong)(pasid & 63) * 64);
        ulong p0 = memory.ReadUInt64(pe);
        ulong p1 = memory.ReadUInt64(pe + 8);
        if ((p0 & 1) == 0)
        {
            return null;
        }

        ushort pdid = (ushort)p1;
        return ((p0 >> 6) & 7) switch
        {
            2 => new Space(SpaceKind.Translated, pdid, p0 & AddrMask, (int)((p0 >> 2) & 7) + 2),
            4 => new Space(SpaceKind.PassThrough, pdid, 0, 0),
            _ => new Space(SpaceKind.Other, pdid, 0, 0),
        };
    }

    // Second-level walk of [lo, hi] (inclusive): every present leaf that intersects it.
    private void Walk(ulong table, int level, ulong baseIova, ulong lo, ulong hi, Action<Leaf> leaf)
    {
        int shift = 12 + (9 * (level - 1));
        ulong span = 1UL << shift;
        for (ulong i = 0; i < 512; i++)
        {
            ulong start = baseIova + (i * span);
            ulong end = start + span - 1;
            if (end < lo || start > hi)
            {
                continue;
            }

            ulong pte = memory.ReadUInt64(table + (i * 8));
            if ((pte & 3) == 0)
            {
                continue;
            }

            if (level == 1 || (pte & 0x80) != 0)
            {
                leaf(new Leaf(start, span, pte & AddrMask & ~(span - 1), (pte & 1) != 0, (pte & 2) != 0));
            }
            else
            {
                Walk(pte & AddrMask, level - 1, start, lo, hi, leaf);
            }
        }
    }
}
