using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>One request to evaluate against an image: who asks, with which PASID, where and how.</summary>
/// <param name="RequesterId">Source id (bus &lt;&lt; 8 | devfn).</param>
/// <param name="Pasid">PASID of a request with PASID prefix, or null for a request without PASID.</param>
/// <param name="Iova">Input address.</param>
/// <param name="Access">Read or write.</param>
/// <param name="Size">Bytes (1–4096, not crossing a 4 KiB page).</param>
public readonly record struct VtdProbe(ushort RequesterId, uint? Pasid, ulong Iova, DmaAccess Access, int Size = 8);
