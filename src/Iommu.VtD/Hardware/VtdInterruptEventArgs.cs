using System.Globalization;

namespace Iommu.VtD.Hardware;

/// <summary>An interrupt message (MSI) the remapping unit sends: the fault event, the invalidation-completion event or the page request event.</summary>
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

    /// <summary>Message address: FEUADDR:FEADDR (or IEUADDR:IEADDR, PEUADDR:PEADDR).</summary>
    public ulong Address { get; }

    /// <summary>Message data: FEDATA (or IEDATA, PEDATA).</summary>
    public uint Data { get; }

    /// <summary>The message as an emulator logs it.</summary>
    /// <returns>For example <c>MSI address 0xfee00000, data 0x41</c> (hexadecimal).</returns>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"MSI address 0x{Address:x}, data 0x{Data:x}");
}
