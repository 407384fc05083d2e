using Iommu.Devices;
using Iommu.Domains;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>One call the core made into the fake driver.</summary>
public sealed record DriverCall(string Op, ulong Iova = 0, ulong Paddr = 0, ulong Size = 0, ulong Count = 0, Device? Device = null, IDomain? Domain = null, uint Pasid = 0);
