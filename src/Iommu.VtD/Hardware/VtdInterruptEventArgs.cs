namespace Iommu.VtD.Hardware;

/// <summary>An interrupt message (MSI) the remapping unit sends: the fault event or the invalidation-completion event.</summary>
public sealed class VtdInterruptEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    /// <param name="address">Message address (upper address register in bits 63:32).</param>
    /// <param name="data">Message data.</param>
    public VtdInterruptEventArgs(ulong address, uint data)
    {
        Address = address;
        Data = data;
    }

    /// <summary>Message address: FEUADDR:FEADDR (or IEUADDR:IEADDR).</summary>
    public ulong Address { get; }

    /// <summary>Message data: FEDATA (or IEDATA).</summary>
    public uint Data { get; }
}
