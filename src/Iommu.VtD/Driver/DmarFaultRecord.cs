using System.Globalization;
using System.Text;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Driver;

/// <summary>A DMA fault the driver's fault handler read from a unit's fault recording registers (a <c>dmar_fault</c> log line).</summary>
/// <param name="Unit">Unit index.</param>
/// <param name="SourceId">Requester id (bus &lt;&lt; 8 | devfn).</param>
/// <param name="Pasid">PASID of the request, or null.</param>
/// <param name="Address">Faulting page address.</param>
/// <param name="Write">Whether it was a write request.</param>
/// <param name="Reason">VT-d fault reason (FRCD.FR); <c>(byte)Reason</c> is the code.</param>
/// <remarks><see cref="object.ToString"/> prints the source id, address and reason in hex, as the kernel's log line does: <c>Reason = 0x85 (ScalableWrite)</c>.</remarks>
public readonly record struct DmarFaultRecord(int Unit, ushort SourceId, uint? Pasid, ulong Address, bool Write, VtdFaultReason Reason)
{
    // The generated ToString would print the reason's name alone and the numbers in decimal.
    private bool PrintMembers(StringBuilder builder)
    {
        builder.Append(CultureInfo.InvariantCulture, $"Unit = {Unit}, SourceId = 0x{SourceId:x4}, Pasid = {(Pasid is uint p ? p.ToString(CultureInfo.InvariantCulture) : "none")}, ");
        builder.Append(CultureInfo.InvariantCulture, $"Address = 0x{Address:x}, Write = {Write}, Reason = {Reason.Format()}");
        return true;
    }
}
