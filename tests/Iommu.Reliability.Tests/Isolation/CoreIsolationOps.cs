using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// One step of the core + driver isolation property. Every op prints as the kernel call it makes,
/// so that a shrunk counterexample reads as a program.
/// </summary>
/// <remarks>
/// Domains are named by slot: <c>d0</c>…<c>d3</c> are UNMANAGED domains from <c>iommu_domain_alloc</c>,
/// <c>def(devN)</c> is the default domain of device N's group. Devices are <c>dev0</c>…<c>dev3</c>
/// (see <see cref="CoreIsolationBed"/>).
/// </remarks>
public abstract record CoreOp
{
    /// <summary>Slots for UNMANAGED domains.</summary>
    public const int DomainSlots = 4;

    protected static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    protected static string Dom(int target) =>
        target < DomainSlots ? "d" + target.ToString(CultureInfo.InvariantCulture) : $"def(dev{(target - DomainSlots).ToString(CultureInfo.InvariantCulture)})";

    protected static string SizeText(ulong size) => size switch
    {
        _ when size >= Sizes.GiB && size % Sizes.GiB == 0 => (size / Sizes.GiB).ToString(CultureInfo.InvariantCulture) + "G",
        _ when size >= Sizes.MiB && size % Sizes.MiB == 0 => (size / Sizes.MiB).ToString(CultureInfo.InvariantCulture) + "M",
        _ => (size / 1024).ToString(CultureInfo.InvariantCulture) + "K",
    };
}

/// <summary><c>d{Slot} = iommu_domain_alloc(pci)</c>.</summary>
public sealed record DomainAllocOp(int Slot) : CoreOp
{
    public override string ToString() => $"d{Slot} = iommu_domain_alloc()";
}

/// <summary><c>iommu_domain_free(d{Slot})</c>.</summary>
public sealed record DomainFreeOp(int Slot) : CoreOp
{
    public override string ToString() => $"iommu_domain_free(d{Slot})";
}

/// <summary><c>iommu_attach_device(d{Slot}, dev{Dev})</c>.</summary>
public sealed record AttachOp(int Slot, int Dev) : CoreOp
{
    public override string ToString() => $"iommu_attach_device(d{Slot}, dev{Dev})";
}

/// <summary><c>iommu_detach_device(d{Slot}, dev{Dev})</c> (the kernel does not check the domain is the group's).</summary>
public sealed record DetachOp(int Slot, int Dev) : CoreOp
{
    public override string ToString() => $"iommu_detach_device(d{Slot}, dev{Dev})";
}

/// <summary><c>iommu_set_dev_attr(dev{Dev}, AUXD_ENABLE / AUXD_DISABLE)</c>.</summary>
public sealed record AuxdOp(int Dev, bool Enable) : CoreOp
{
    public override string ToString() => $"iommu_set_dev_attr(dev{Dev}, {(Enable ? "AUXD_ENABLE" : "AUXD_DISABLE")})";
}

/// <summary><c>iommu_attach_device_aux(d{Slot}, dev{Dev})</c>, then <c>DOMAIN_ATTR_AUXD_ID</c>.</summary>
public sealed record AuxAttachOp(int Slot, int Dev) : CoreOp
{
    public override string ToString() => $"iommu_attach_device_aux(d{Slot}, dev{Dev})";
}

/// <summary><c>iommu_detach_device_aux(d{Slot}, dev{Dev})</c>.</summary>
public sealed record AuxDetachOp(int Slot, int Dev) : CoreOp
{
    public override string ToString() => $"iommu_detach_device_aux(d{Slot}, dev{Dev})";
}

/// <summary><c>iommu_map(target, iova, pa, size, prot)</c>; skipped when the model has any of the range mapped (callers never map over live mappings).</summary>
/// <summary>Which PASID a <see cref="PasidAttachOp"/> names.</summary>
public enum PasidChoice
{
    /// <summary>One the test saw (an aux domain's, or one attached before).</summary>
    Known,

    /// <summary>A fresh one from <c>iommu_alloc_global_pasid</c> for the device.</summary>
    Global,

    /// <summary>PASID 0 (RID2PASID on VT-d).</summary>
    Zero,

    /// <summary>Beyond every device's PASID table.</summary>
    Beyond,
}

/// <summary><c>iommu_attach_device_pasid</c> (6.2); slot <see cref="CoreOp.DomainSlots"/> names the nested domain.</summary>
public sealed record PasidAttachOp(int Slot, int Dev, PasidChoice Choice, int Index) : CoreOp
{
    /// <inheritdoc/>
    public override string ToString() => $"iommu_attach_device_pasid({(Slot == DomainSlots ? "nd" : $"d{Slot}")}, dev{Dev}, {Choice}[{Index}])";
}

/// <summary><c>iommu_detach_device_pasid</c> of one of the device's attached PASIDs (6.2).</summary>
public sealed record PasidDetachOp(int Dev, int Index) : CoreOp
{
    /// <inheritdoc/>
    public override string ToString() => $"iommu_detach_device_pasid(dev{Dev}, attached[{Index}])";
}

public sealed record MapOp(int Target, ulong Iova, ulong Pa, ulong Size, IommuProt Prot) : CoreOp
{
    public override string ToString() => $"iommu_map({Dom(Target)}, {Hex(Iova)}, pa {Hex(Pa)}, {SizeText(Size)}, {ProtName(Prot)})";

    private static string ProtName(IommuProt p) =>
        ((p & IommuProt.Read) != 0 ? "R" : string.Empty) + ((p & IommuProt.Write) != 0 ? "W" : string.Empty)
        + ((p & IommuProt.Cache) != 0 ? "|CACHE" : string.Empty) is { Length: > 0 } s ? s : "none";
}

/// <summary><c>iommu_unmap(target, iova, size)</c>.</summary>
public sealed record UnmapOp(int Target, ulong Iova, ulong Size) : CoreOp
{
    public override string ToString() => $"iommu_unmap({Dom(Target)}, {Hex(Iova)}, {SizeText(Size)})";
}

/// <summary>Where a DMA probe aims.</summary>
public enum ProbeAddr
{
    /// <summary>A page the domain this RID/PASID reaches maps (falls back to <see cref="AnyLeaf"/>).</summary>
    OwnLeaf,

    /// <summary>A page any live domain maps (cross-domain isolation).</summary>
    AnyLeaf,

    /// <summary>A page that was unmapped or whose domain was detached recently (stale translations).</summary>
    Stale,

    /// <summary>An address from the IOVA pool.</summary>
    Pool,
}

/// <summary>Which PASID a DMA probe carries.</summary>
public enum ProbePasid
{
    /// <summary>No PASID (RID, i.e. RID2PASID in scalable mode).</summary>
    None,

    /// <summary>One of the PASIDs the run has seen allocated (live or released).</summary>
    Known,

    /// <summary>A PASID never allocated (1000).</summary>
    Never,
}

/// <summary>A device DMA read or write of 8 bytes, user or supervisor, a read possibly an instruction fetch (the attributes travel only with a PASID).</summary>
public sealed record DmaOp(int Dev, bool Write, ProbePasid Pasid, int PasidIndex, ProbeAddr Addr, int AddrIndex, int Offset, DmaRequestAttributes Attrs = DmaRequestAttributes.None) : CoreOp
{
    public override string ToString()
    {
        string pasid = Pasid switch
        {
            ProbePasid.None => "-",
            ProbePasid.Known => $"known[{PasidIndex}]",
            _ => "never",
        };
        string addr = Addr switch
        {
            ProbeAddr.OwnLeaf => "own",
            ProbeAddr.AnyLeaf => "any",
            ProbeAddr.Stale => "stale",
            _ => "pool",
        };
        string attrs = Attrs == DmaRequestAttributes.None ? string.Empty : $", {Attrs}";
        return $"dma_{(Write ? "write" : "read")}(dev{Dev}, pasid {pasid}, {addr}[{AddrIndex}]+off{Offset}{attrs})";
    }
}

/// <summary>
/// <c>np = domain_alloc_user(NEST_PARENT)</c>, the parent's map of the guest memory (stage-1 tables, a
/// read-write and a read-only data region), the guest's stage-1 upper levels written, then
/// <c>nd = domain_alloc_user(np, {Flags, table GPA, 48})</c>. Skipped when the sample has one.
/// </summary>
/// <param name="Flags">SRE / WPE / EAFE of the stage-1 description.</param>
/// <param name="PathUser">U/S on the upper-level entries (without it no user request passes).</param>
/// <param name="PathWrite">R/W on the upper-level entries (without it no write passes the R/W rule).</param>
public sealed record NestAllocOp(IommuVtdS1 Flags, bool PathUser, bool PathWrite) : CoreOp
{
    public override string ToString() => $"np = alloc_nest_parent(); nd = alloc_nested(np, {Flags}, path {(PathUser ? "U" : "S")}{(PathWrite ? "W" : "R")})";
}

/// <summary><c>intel_nested_attach_dev(nd, dev{Dev})</c>: the device's RID translates through the nested domain for the rest of the sample.</summary>
public sealed record NestAttachOp(int Dev) : CoreOp
{
    public override string ToString() => $"intel_nested_attach_dev(nd, dev{Dev})";
}

/// <summary>How a guest follows a stage-1 change.</summary>
public enum Stage1Inv
{
    /// <summary>Not at all (yet): the old or the new translation may be used.</summary>
    None,

    /// <summary>One page (<c>IOMMU_HWPT_INVALIDATE</c>, leaf).</summary>
    Page,

    /// <summary>Everything (address 0, <c>U64_MAX</c> pages).</summary>
    All,
}

/// <summary>
/// The guest writes stage-1 leaf <c>Page</c> (IOVA <see cref="CoreIsolationBed.Stage1Base"/> + Page × 4K) to
/// point at its data page <c>Target</c>, with P, R/W, U/S and XD as given and A = D = 0, then invalidates as <c>Inv</c> says.
/// </summary>
public sealed record Stage1SetOp(int Page, int Target, bool Present, bool Write, bool User, bool Xd, Stage1Inv Inv) : CoreOp
{
    public override string ToString() =>
        $"guest pte[{Page}] = {(Present ? "P" : "-")}{(Write ? "W" : "R")}{(User ? "U" : "S")}{(Xd ? "X" : string.Empty)} -> gpa[{Target}]"
        + (Inv == Stage1Inv.None ? string.Empty : $"; cache_invalidate_user(nd, {(Inv == Stage1Inv.Page ? "page" : "all")})");
}

/// <summary><c>cache_invalidate_user(nd, …)</c> of stage-1 page <c>Page</c>, or of everything.</summary>
public sealed record Stage1InvalidateOp(int Page, bool All) : CoreOp
{
    public override string ToString() => $"cache_invalidate_user(nd, {(All ? "all" : $"page {Page}")})";
}

/// <summary><c>dma_map_page(dev{Dev}, pa, size, dir)</c> through the device's default domain (DMA, DMA_FQ, or dma-direct for IDENTITY).</summary>
public sealed record DmaMapOp(int Dev, ulong Pa, ulong Size, DmaDataDirection Dir) : CoreOp
{
    public override string ToString() => $"h = dma_map_page(dev{Dev}, pa {Hex(Pa)}, {Hex(Size)}, {Dir})";
}

/// <summary><c>dma_unmap_page(dev{Dev}, h, size, dir)</c> of the device's live DMA mapping number <c>Index</c> modulo their count (skipped when it has none).</summary>
public sealed record DmaUnmapOp(int Dev, int Index) : CoreOp
{
    public override string ToString() => $"dma_unmap_page(dev{Dev}, h[{Index}])";
}

/// <summary><c>Count</c> one-page <c>dma_map_page</c> calls on dev{Dev}, then <c>dma_unmap_page</c> of each in order (fills a flush queue).</summary>
public sealed record DmaBurstOp(int Dev, int Count) : CoreOp
{
    public override string ToString() => $"{Count} × dma_map_page(dev{Dev}, 4K), then {Count} × dma_unmap_page";
}

/// <summary>The platform clock moves by <c>Ms</c> milliseconds (flush-queue timers fire).</summary>
public sealed record ClockOp(int Ms) : CoreOp
{
    public override string ToString() => $"clock += {Ms} ms";
}
