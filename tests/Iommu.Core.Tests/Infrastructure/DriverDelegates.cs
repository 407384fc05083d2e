using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;

namespace Iommu.Core.Tests.Infrastructure;

// Delegate shapes for Moq callbacks on IIommuOps members with out/ref parameters.
public delegate Errno MapPagesFn(IDomain domain, ulong iova, ulong paddr, ulong pgsize, ulong pgcount, IommuProt prot, out ulong mapped);

public delegate ulong UnmapFn(IDomain domain, ulong iova, ulong size, ref IommuIotlbGather gather);

public delegate ulong UnmapPagesFn(IDomain domain, ulong iova, ulong pgsize, ulong pgcount, ref IommuIotlbGather gather);

public delegate void IotlbSyncFn(IDomain domain, ref IommuIotlbGather gather);

public delegate Errno DeviceGroupFn(Device device, out IommuGroup? group);

public delegate Errno GetDevAttrFn(Device device, IommuDevAttr attr, out bool value);

public delegate Errno DomainGetAttrFn(IDomain domain, DomainAttr attr, out ulong value);
