using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware.Infrastructure;

/// <summary>
/// One scalable-mode device whose PASID entries use first-level (PGTT 001) or nested (PGTT 011)
/// translation, with first-level tables built here from the spec's literal IA-32e bit positions
/// (independently of the model's constants). Nested rigs place the first-level tables at guest-physical
/// addresses <see cref="GpaOffset"/> above their host frames and map each through the second level.
/// </summary>
internal sealed class FirstStageRig : IDisposable
{
    public const ushort Rid = 0x0300;

    // IA-32e entry bits.
    public const ulong P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, EA = 0x400, XD = 1UL << 63;
    public const ulong Table = P | RW | US;

    // PASID entry q2 bits.
    public const ulong Sre = 1, Ere = 2, Flpm5 = 4, Wpe = 0x10, Nxe = 0x20, Smep = 0x40, Eafe = 0x80;

    public FirstStageRig(VtdConfig config, bool nested = false, int levels = 4, ulong gpaOffset = 0x2000_0000, PhysicalMemory? memory = null)
    {
        B = memory is null ? new VtdBench(config) : new VtdBench(config, memory);
        Nested = nested;
        Levels = levels;
        GpaOffset = nested ? gpaOffset : 0;
        Dir = B.AllocFrame();
        B.ScalableContext(Rid, Dir, pdts: 7);
        FlRoot = B.AllocFrame();
        SlRoot = B.AllocFrame();
        if (nested)
        {
            SlMap(FlRoot + GpaOffset, FlRoot);
        }
    }

    public VtdBench B { get; }

    public VtdUnit Unit => B.Unit;

    public bool Nested { get; }

    public int Levels { get; }

    public ulong GpaOffset { get; }

    public ulong Dir { get; }

    /// <summary>Host address of the top first-level table.</summary>
    public ulong FlRoot { get; }

    /// <summary>Second-level root (4-level, AW = 2) used by nested entries.</summary>
    public ulong SlRoot { get; }

    /// <summary>Writes the PASID entry: PGTT 001 (or 011 when nested), AW 2, FLPTR = the rig's root (as a GPA when nested), q2 flags.</summary>
    public void Entry(uint pasid, ushort did, ulong q2Flags = 0, ulong q0Extra = 0, ulong? flptr = null)
    {
        ulong q0 = 1 | (2UL << 2) | ((Nested ? 3UL : 1UL) << 6) | (Nested ? SlRoot : 0) | q0Extra;
        ulong q2 = (flptr ?? (FlRoot + GpaOffset)) | q2Flags | (Levels == 5 ? Flpm5 : 0);
        B.PasidEntry(Dir, pasid, q0, did, q2: q2);
    }

    public void Enable() => B.Enable(scalable: true);

    /// <summary>Maps a second-level 4 KiB page gpa → hpa (AW 2, 4 levels).</summary>
    public void SlMap(ulong gpa, ulong hpa, bool read = true, bool write = true) => B.Map(SlRoot, 4, gpa, hpa, 1, read, write);

    /// <summary>
    /// Maps <paramref name="iova"/> to <paramref name="output"/> (a GPA when nested) with a leaf at
    /// <paramref name="leafLevel"/>; missing tables get <paramref name="table"/> bits; returns the leaf's host address.
    /// </summary>
    public ulong Map(ulong iova, ulong output, int leafLevel = 1, ulong leaf = P | RW | US, ulong table = Table)
    {
        ulong t = FlRoot;
        for (int level = Levels; level > leafLevel; level--)
        {
            ulong slot = t + Index(iova, level);
            ulong e = B.Memory.ReadUInt64(slot);
            if ((e & P) == 0)
            {
                ulong next = B.AllocFrame();
                if (Nested)
                {
                    SlMap(next + GpaOffset, next);
                }

                e = (next + GpaOffset) | table;
                B.Memory.WriteUInt64(slot, e);
            }

            t = (e & 0x000F_FFFF_FFFF_F000) - GpaOffset;
        }

        ulong leafPa = t + Index(iova, leafLevel);
        B.Memory.WriteUInt64(leafPa, output | leaf | (leafLevel > 1 ? PS : 0));
        return leafPa;
    }

    /// <summary>Host address of the entry at <paramref name="level"/> on <paramref name="iova"/>'s path.</summary>
    public ulong EntryAt(ulong iova, int level)
    {
        ulong t = FlRoot;
        for (int l = Levels; l > level; l--)
        {
            t = (B.Memory.ReadUInt64(t + Index(iova, l)) & 0x000F_FFFF_FFFF_F000) - GpaOffset;
        }

        return t + Index(iova, level);
    }

    public ulong Read(ulong pa) => B.Memory.ReadUInt64(pa);

    public void Set(ulong pa, ulong value) => B.Memory.WriteUInt64(pa, value);

    public VtdTranslation Translate(uint? pasid, ulong iova, DmaAccess access = DmaAccess.Read, DmaRequestAttributes attrs = DmaRequestAttributes.None) =>
        Unit.Translate(Rid, pasid, iova, 4, access, attrs);

    public void Dispose() => B.Dispose();

    private static ulong Index(ulong iova, int level) => ((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8;
}
