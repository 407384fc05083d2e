namespace Iommu.Faults;

/// <summary>Per-device fault state (<c>struct iommu_fault_param</c>).</summary>
internal sealed class DeviceFaultParam
{
    public DeviceFaultParam(IommuDeviceFaultHandler handler, object? data)
    {
        Handler = handler;
        Data = data;
    }

    public IommuDeviceFaultHandler Handler { get; }

    public object? Data { get; }

    public List<IommuFault> Pending { get; } = [];

    public Lock Lock { get; } = new();
}
