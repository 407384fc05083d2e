namespace Iommu.VtD.Hardware;

/// <summary>
/// One request's second-level translation as the legacy and scalable paths hand it over: who asks
/// (source id, PASID), which cache tags apply (DID, IOTLB PASID tag), where the tables are, and what is
/// accessed. Readonly and passed by <see langword="in"/>: thirteen values travel as one reference.
/// </summary>
internal readonly struct SecondLevelRequest(
    long epoch, ushort sid, bool hasPasid, uint pasid, uint tag, ushort did, ulong root, int levels,
    ulong iova, ulong size, bool write, bool fpd, bool scalable)
{
    /// <summary>The invalidation epoch the translation started under (fills under another are dropped).</summary>
    public long Epoch { get; } = epoch;

    /// <summary>Source id: bus &lt;&lt; 8 | devfn.</summary>
    public ushort Sid { get; } = sid;

    /// <summary>Whether the request carries a PASID (what a fault record reports).</summary>
    public bool HasPasid { get; } = hasPasid;

    /// <summary>The request's PASID (when <see cref="HasPasid"/>).</summary>
    public uint Pasid { get; } = pasid;

    /// <summary>The IOTLB's PASID tag: the effective PASID, or the legacy no-PASID tag.</summary>
    public uint Tag { get; } = tag;

    /// <summary>Domain id the IOTLB entries are tagged with.</summary>
    public ushort Did { get; } = did;

    /// <summary>SLPTPTR: the top table.</summary>
    public ulong Root { get; } = root;

    /// <summary>Levels of the walk (AW + 2).</summary>
    public int Levels { get; } = levels;

    /// <summary>Input address.</summary>
    public ulong Iova { get; } = iova;

    /// <summary>Bytes accessed from <see cref="Iova"/>.</summary>
    public ulong Size { get; } = size;

    /// <summary>Whether the access is a write.</summary>
    public bool Write { get; } = write;

    /// <summary>Fault processing disabled (context, directory or PASID entry FPD).</summary>
    public bool Fpd { get; } = fpd;

    /// <summary>Scalable mode: selects the scalable fault reasons.</summary>
    public bool Scalable { get; } = scalable;
}
