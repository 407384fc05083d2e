using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// What <see cref="IndependentWalker"/> makes of one request: the output address and the accesses the
/// tables allow (read and write for a user request), or no translation and the step that refused it.
/// </summary>
internal readonly record struct ReferenceWalk(bool Translated, ulong Pa, bool Read, bool Write, ulong PageSize, string Path, bool Undecided = false)
{
    public static ReferenceWalk Blocked(string why) => new(false, 0, false, false, 0, why);

    public static ReferenceWalk Open(string why) => new(false, 0, false, false, 0, why, Undecided: true);

    public bool Allows(bool write) => Translated && (write ? Write : Read);
}

/// <summary>
/// A reference walker of the VT-d remapping structures, written from the hardware notes and the VT-d
/// specification alone: it reads the raw bytes of the root, context, PASID and paging tables the driver
/// built and decodes every field itself (nothing from the model's walkers or VtdFormat), so a misreading
/// both the driver and the model share shows up as a disagreement with it.
/// </summary>
/// <remarks>
/// <see cref="Walk"/> decides user (unprivileged), non-execute requests and leaves nested entries (PGTT 011)
/// and a pass-through input at or beyond the host address width undecided; <see cref="Request"/> decides
/// first-level and nested entries for any request, with the fault reason and the A/D bits it writes.
/// </remarks>
internal sealed partial class IndependentWalker
{
    private const ulong InterruptFirst = 0xFEE0_0000, InterruptLast = 0xFEEF_FFFF;

    private readonly PhysicalMemory _memory;
    private readonly ulong _cap, _ecap, _rtaddr;
    private readonly bool _enabled;
    private readonly int _haw, _mgaw;

    public IndependentWalker(VtdUnit unit, PhysicalMemory memory)
    {
        _memory = memory;
        _cap = unit.Read64(0x08);
        _ecap = unit.Read64(0x10);
        _rtaddr = unit.Read64(0x20);
        _enabled = (unit.Read32(0x1C) & (1u << 31)) != 0; // GSTS.TES
        _haw = unit.Config.HostAddressWidth; // the DMAR table's HAW: not a register
        _mgaw = (int)((_cap >> 16) & 0x3F) + 1;
    }

    private static ulong Bits(ulong v, int hi, int lo) => (v >> lo) & ((hi - lo == 63) ? ulong.MaxValue : (1UL << (hi - lo + 1)) - 1);

    private static bool Bit(ulong v, int b) => ((v >> b) & 1) != 0;

    // Bits HAW..63 of a table pointer: reserved in every root, context and PASID structure.
    private ulong AboveHaw => ~((1UL << _haw) - 1);

    private bool SagawHas(int aw) => aw is >= 0 and <= 4 && Bit(_cap, 8 + aw);

    private bool Read(ulong pa, out ulong v)
    {
        if (!_memory.Contains(pa, 8))
        {
            v = 0;
            return false;
        }

        v = _memory.ReadUInt64(pa);
        return true;
    }

    /// <summary>Walks the request as the hardware must, from the tables in memory.</summary>
    public ReferenceWalk Walk(ushort sid, uint? pasid, ulong iova, out int? did)
    {
        did = null;
        if (!_enabled)
        {
            return new ReferenceWalk(true, iova, true, true, 4096, "TE=0");
        }

        int bus = sid >> 8, devfn = sid & 0xFF;
        ulong rta = _rtaddr & ~0xFFFUL;
        int ttm = (int)Bits(_rtaddr, 11, 10);
        if (ttm == 0)
        {
            return pasid is not null ? ReferenceWalk.Blocked("legacy: request with PASID") : Legacy(rta, bus, devfn, iova, out did);
        }

        return ttm == 1 && Bit(_ecap, 43) ? Scalable(rta, bus, devfn, pasid, iova, out did) : ReferenceWalk.Blocked("TTM");
    }

    private ReferenceWalk Legacy(ulong rta, int bus, int devfn, ulong iova, out int? did)
    {
        did = null;
        if (!Read(rta + ((ulong)bus * 16), out ulong r0) || !Read(rta + ((ulong)bus * 16) + 8, out ulong r1))
        {
            return ReferenceWalk.Blocked("root read");
        }

        if (!Bit(r0, 0))
        {
            return ReferenceWalk.Blocked("root P=0");
        }

        if (r1 != 0 || (r0 & (0xFFEUL | AboveHaw)) != 0)
        {
            return ReferenceWalk.Blocked("root reserved");
        }

        ulong ce = (r0 & ~0xFFFUL) + ((ulong)devfn * 16);
        if (!Read(ce, out ulong c0) || !Read(ce + 8, out ulong c1))
        {
            return ReferenceWalk.Blocked("context read");
        }

        if (!Bit(c0, 0))
        {
            return ReferenceWalk.Blocked("context P=0");
        }

        // Reserved: 11:4, address bits at or above HAW, bit 71 and 127:88.
        if ((c0 & (0xFF0UL | AboveHaw)) != 0 || Bit(c1, 7) || Bits(c1, 63, 24) != 0)
        {
            return ReferenceWalk.Blocked("context reserved");
        }

        int tt = (int)Bits(c0, 3, 2);
        int aw = (int)Bits(c1, 2, 0);
        did = (int)Bits(c1, 23, 8);
        if (tt == 3 || (tt == 1 && !Bit(_ecap, 2)) || (tt == 2 && !Bit(_ecap, 6)))
        {
            return ReferenceWalk.Blocked("context TT");
        }

        // AW must name a supported AGAW for pass-through entries too (software programs the largest one).
        if (!SagawHas(aw))
        {
            return ReferenceWalk.Blocked("context AW not in SAGAW");
        }

        if (tt == 2)
        {
            return PassThrough(iova, "legacy TT=10");
        }

        return SecondLevel(c0 & ~0xFFFUL, aw, iova, "legacy");
    }

    private ReferenceWalk PassThrough(ulong iova, string path) =>
        iova >> _haw != 0 ? ReferenceWalk.Open(path + ": beyond HAW") : new ReferenceWalk(true, iova, true, true, 4096, path);

    private ReferenceWalk Scalable(ulong rta, int bus, int devfn, uint? pasid, ulong iova, out int? did)
    {
        Span<ulong> q = stackalloc ulong[8];
        if (ScalablePasidEntry(rta, bus, devfn, pasid, q, out did) is ReferenceWalk refused)
        {
            return refused;
        }

        int aw = (int)Bits(q[0], 4, 2);
        int pgtt = (int)Bits(q[0], 8, 6);
        switch (pgtt)
        {
            case 4:
                return PassThrough(iova, "PGTT=100");
            case 2:
                if ((q[0] & AboveHaw) != 0)
                {
                    return ReferenceWalk.Blocked("SLPTPTR beyond HAW");
                }

                return SagawHas(aw) ? SecondLevel(q[0] & ~0xFFFUL, aw, iova, "PGTT=010") : ReferenceWalk.Blocked("PASID AW not in SAGAW");
            case 1:
                int flpm = (int)Bits(q[2], 3, 2);
                if (flpm > 1 || (flpm == 1 && !Bit(_cap, 60)) || (q[2] & AboveHaw) != 0)
                {
                    return ReferenceWalk.Blocked("FLPM/FLPTR");
                }

                return FirstLevel(q[2] & ~0xFFFUL, flpm == 0 ? 4 : 5, iova);
            default:
                return ReferenceWalk.Open("PGTT=011 (nested) not modelled");
        }
    }

    // Root, context, PASID directory and PASID entry of a scalable-mode request: the entry's eight words in
    // q, or the step that refused it.
    private ReferenceWalk? ScalablePasidEntry(ulong rta, int bus, int devfn, uint? pasid, Span<ulong> q, out int? did)
    {
        did = null;
        if (!Read(rta + ((ulong)bus * 16), out ulong r0) || !Read(rta + ((ulong)bus * 16) + 8, out ulong r1))
        {
            return ReferenceWalk.Blocked("root read");
        }

        // Lower half (LP, LCTP) for devfn 0-127, upper half (UP, UCTP) for 128-255.
        ulong half = devfn < 128 ? r0 : r1;
        if (!Bit(half, 0))
        {
            return ReferenceWalk.Blocked("root LP/UP=0");
        }

        if ((half & (0xFFEUL | AboveHaw)) != 0)
        {
            return ReferenceWalk.Blocked("root reserved");
        }

        ulong ce = (half & ~0xFFFUL) + ((ulong)(devfn & 0x7F) * 32);
        Span<ulong> c = stackalloc ulong[4];
        for (int i = 0; i < 4; i++)
        {
            if (!Read(ce + ((ulong)i * 8), out c[i]))
            {
                return ReferenceWalk.Blocked("context read");
            }
        }

        if (!Bit(c[0], 0))
        {
            return ReferenceWalk.Blocked("context P=0");
        }

        // Reserved: 8:5, pointer bits at or above HAW, 127:85 and all of the upper 128 bits.
        if ((c[0] & (0x1E0UL | AboveHaw)) != 0 || Bits(c[1], 63, 21) != 0 || c[2] != 0 || c[3] != 0)
        {
            return ReferenceWalk.Blocked("context reserved");
        }

        bool pasidEnable = Bit(c[0], 3);
        int pdts = (int)Bits(c[0], 11, 9);
        ulong dir = c[0] & ~0xFFFUL;
        uint effective;
        if (pasid is uint p)
        {
            if (!pasidEnable || !Bit(_ecap, 40))
            {
                return ReferenceWalk.Blocked("PASIDE=0");
            }

            effective = p;
        }
        else
        {
            // Requests without PASID take RID_PASID when the unit reports RPS, else PASID 0.
            effective = Bit(_ecap, 49) ? (uint)Bits(c[1], 19, 0) : 0;
        }

        uint dirIndex = effective >> 6;
        if (dirIndex >= 1u << (pdts + 7))
        {
            return ReferenceWalk.Blocked("PASID beyond PDTS");
        }

        if (!Read(dir + ((ulong)dirIndex * 8), out ulong de))
        {
            return ReferenceWalk.Blocked("PASID directory read");
        }

        if (!Bit(de, 0))
        {
            return ReferenceWalk.Blocked("PASID directory P=0");
        }

        ulong pe = (de & ~0xFFFUL & ~AboveHaw) + ((ulong)(effective & 0x3F) * 64);
        for (int i = 0; i < 8; i++)
        {
            if (!Read(pe + ((ulong)i * 8), out q[i]))
            {
                return ReferenceWalk.Blocked("PASID entry read");
            }
        }

        if (!Bit(q[0], 0))
        {
            return ReferenceWalk.Blocked("PASID entry P=0");
        }

        int pgtt = (int)Bits(q[0], 8, 6);
        did = (int)Bits(q[1], 15, 0);
        bool pgttOk = pgtt switch
        {
            1 => Bit(_ecap, 47),
            2 => Bit(_ecap, 46),
            3 => Bit(_ecap, 26),
            4 => Bit(_ecap, 6),
            _ => false,
        };
        if (!pgttOk)
        {
            return ReferenceWalk.Blocked("PGTT " + pgtt);
        }

        // Reserved: q0 11:10, q1 22:16, q2 11:8, and the upper 320 bits.
        if (Bits(q[0], 11, 10) != 0 || Bits(q[1], 22, 16) != 0 || Bits(q[2], 11, 8) != 0 || q[3] != 0 || q[4] != 0 || q[5] != 0 || q[6] != 0 || q[7] != 0)
        {
            return ReferenceWalk.Blocked("PASID entry reserved");
        }

        return null;
    }

    private static bool InInterruptWindow(ulong pa) => pa <= InterruptLast && pa + 1 > InterruptFirst;

    // Second-level paging: levels = AW + 2; input below 2^min(AGAW, MGAW).
    private ReferenceWalk SecondLevel(ulong table, int aw, ulong iova, string path)
    {
        int levels = aw + 2;
        int width = Math.Min(30 + (9 * aw), _mgaw);
        if (width < 64 && iova >> width != 0)
        {
            return ReferenceWalk.Blocked(path + ": input beyond AGAW/MGAW");
        }

        ulong addrMask = ((1UL << 52) - 1) & ~0xFFFUL & ((1UL << _haw) - 1);
        ulong aboveHawBelow52 = ((1UL << 52) - 1) & ~((1UL << _haw) - 1);
        bool snoopControl = Bit(_ecap, 7);
        bool r = true, w = true;
        for (int level = levels; level >= 1; level--)
        {
            int shift = 12 + (9 * (level - 1));
            ulong index = (iova >> shift) & 0x1FF;
            if (!Read(table + (index * 8), out ulong e))
            {
                return ReferenceWalk.Blocked(path + ": table read at level " + level);
            }

            bool er = Bit(e, 0), ew = Bit(e, 1);
            if (!er && !ew)
            {
                return ReferenceWalk.Blocked(path + ": not present at level " + level);
            }

            r &= er;
            w &= ew;
            bool ps = Bit(e, 7);
            bool leaf = level == 1 || (ps && level <= 3);

            // Reserved everywhere: address bits 51:HAW and bit 62.
            ulong reserved = aboveHawBelow52 | (1UL << 62);
            if (!leaf)
            {
                reserved |= 1UL << 11; // SNP has no meaning in a table pointer
                if (level >= 4 && ps)
                {
                    return ReferenceWalk.Blocked(path + ": PS in SL-PML4E/PML5E");
                }
            }
            else
            {
                if (!snoopControl)
                {
                    reserved |= 1UL << 11;
                }

                if (level == 2 && !Bit(_cap, 34))
                {
                    return ReferenceWalk.Blocked(path + ": 2 MiB leaf without SLLPS");
                }

                if (level == 3 && !Bit(_cap, 35))
                {
                    return ReferenceWalk.Blocked(path + ": 1 GiB leaf without SLLPS");
                }

                if (level > 1)
                {
                    reserved |= ((1UL << shift) - 1) & ~0xFFFUL; // the page's low address bits
                }
            }

            if ((e & reserved) != 0)
            {
                return ReferenceWalk.Blocked(path + ": reserved bits at level " + level);
            }

            if (leaf)
            {
                ulong size = 1UL << shift;
                ulong pa = (e & addrMask & ~(size - 1)) | (iova & (size - 1));
                return InInterruptWindow(pa)
                    ? ReferenceWalk.Blocked(path + ": output in the interrupt window")
                    : new ReferenceWalk(true, pa, r, w, size, path + " L" + level);
            }

            table = e & addrMask;
        }

        throw new InvalidOperationException("unreachable");
    }

    // First-level (IA-32e) paging for a user, non-execute request: P, U/S at every level; R/W for writes.
    private ReferenceWalk FirstLevel(ulong table, int levels, ulong iova)
    {
        int width = levels == 4 ? 48 : 57;
        ulong upper = iova >> (width - 1);
        if (upper != 0 && upper != (ulong.MaxValue >> (width - 1)))
        {
            return ReferenceWalk.Blocked("first level: non-canonical input");
        }

        ulong addrMask = ((1UL << 52) - 1) & ~0xFFFUL & ((1UL << _haw) - 1);
        ulong aboveHawBelow52 = ((1UL << 52) - 1) & ~((1UL << _haw) - 1);
        bool user = true, rw = true;
        for (int level = levels; level >= 1; level--)
        {
            int shift = 12 + (9 * (level - 1));
            ulong index = (iova >> shift) & 0x1FF;
            if (!Read(table + (index * 8), out ulong e))
            {
                return ReferenceWalk.Blocked("first level: table read at level " + level);
            }

            if (!Bit(e, 0))
            {
                return ReferenceWalk.Blocked("first level: P=0 at level " + level);
            }

            user &= Bit(e, 2);
            rw &= Bit(e, 1);
            bool ps = Bit(e, 7);
            if (ps && level >= 4)
            {
                return ReferenceWalk.Blocked("first level: PS in PML4E/PML5E");
            }

            if (ps && level == 3 && !Bit(_cap, 56))
            {
                return ReferenceWalk.Blocked("first level: 1 GiB page without FL1GP");
            }

            bool leaf = level == 1 || (ps && level <= 3);
            ulong reserved = aboveHawBelow52;
            if (leaf && level > 1)
            {
                reserved |= ((1UL << shift) - 1) & ~0x1FFFUL; // bit 12 is PAT in a large leaf
            }

            if ((e & reserved) != 0)
            {
                return ReferenceWalk.Blocked("first level: reserved bits at level " + level);
            }

            if (leaf)
            {
                if (!user)
                {
                    return ReferenceWalk.Blocked("first level: supervisor page for a user request");
                }

                ulong size = 1UL << shift;
                ulong pa = (e & addrMask & ~(size - 1)) | (iova & (size - 1));
                return InInterruptWindow(pa)
                    ? ReferenceWalk.Blocked("first level: output in the interrupt window")
                    : new ReferenceWalk(true, pa, true, rw, size, "first level L" + level);
            }

            table = e & addrMask;
        }

        throw new InvalidOperationException("unreachable");
    }
}
