namespace Iommu.Devices;

/// <summary>A PCIe page request message (PRI) a device sends when a translation completion did not grant what it needs.</summary>
/// <param name="Pasid">PASID prefix, or null for a request without PASID.</param>
/// <param name="Address">Untranslated address of the page (bits 11:0 are ignored).</param>
/// <param name="Read">Read access requested.</param>
/// <param name="Write">Write access requested.</param>
/// <param name="Execute">Execute access requested (PASID prefix ER bit).</param>
/// <param name="Privileged">Privileged-mode access requested (PASID prefix PMR bit).</param>
/// <param name="GroupIndex">Page request group index (PRGI), 0–511.</param>
/// <param name="LastInGroup">Last request of its group (LPIG): software answers the group with one page group response.</param>
public readonly record struct PageRequestMessage(uint? Pasid, ulong Address, bool Read, bool Write, bool Execute, bool Privileged, int GroupIndex, bool LastInGroup);
