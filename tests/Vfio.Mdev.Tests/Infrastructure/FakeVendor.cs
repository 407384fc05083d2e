namespace Vfio.Mdev.Tests.Infrastructure;

/// <summary>A <see cref="MinimalFakeVendor"/> with every optional callback of <c>struct mdev_parent_ops</c>.</summary>
public sealed class FakeVendor(params string?[] groupNames)
    : MinimalFakeVendor(groupNames), IMdevOpenDeviceOps, IMdevReadWriteOps, IMdevIoctlOps, IMdevMmapOps, IMdevRequestOps;
