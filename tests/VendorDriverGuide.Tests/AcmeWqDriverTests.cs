using System.Buffers.Binary;
using Iommu;
using Iommu.Domains;
using Moq;
using Vfio.Mdev;

namespace Acme.Wq.Tests;

/// <summary>The driver's callbacks with a mocked mdev and the real IOMMU core of a test platform.</summary>
public sealed class AcmeWqDriverTests : IDisposable
{
    private readonly AcmeWqBed _t = new();

    public void Dispose() => _t.Dispose();

    private static Mock<IMdevDevice> NewMdev()
    {
        var mdev = new Mock<IMdevDevice>();
        object? drvdata = null;
        mdev.Setup(m => m.Uuid).Returns(Guid.NewGuid());
        mdev.Setup(m => m.SetDrvdata(It.IsAny<object?>())).Callback<object?>(d => drvdata = d);
        mdev.Setup(m => m.GetDrvdata()).Returns(() => drvdata);
        return mdev;
    }

    [Fact]
    public void Create_enables_aux_and_makes_the_parent_the_mdevs_iommu_device()
    {
        var driver = new AcmeWqDriver(_t.Iommu, _t.Parent);
        Mock<IMdevDevice> mdev = NewMdev();

        Assert.Equal(Errno.None, driver.Create(mdev.Object));

        mdev.Verify(m => m.SetIommuDevice(_t.Parent), Times.Once);
        Assert.True(_t.Iommu.DevFeatureEnabled(_t.Parent, IommuDevFeature.Aux));
    }

    [Fact]
    public void Create_beyond_the_last_queue_is_enospc_and_remove_frees_it()
    {
        var driver = new AcmeWqDriver(_t.Iommu, _t.Parent, queues: 1);
        Mock<IMdevDevice> first = NewMdev();
        Assert.Equal(Errno.None, driver.Create(first.Object));

        Assert.Equal(Errno.ENOSPC, driver.Create(NewMdev().Object));

        Assert.Equal(Errno.None, driver.Remove(first.Object));
        Assert.False(_t.Iommu.DevFeatureEnabled(_t.Parent, IommuDevFeature.Aux));
        Assert.Equal(Errno.None, driver.Create(NewMdev().Object));
    }

    [Fact]
    public void Open_programs_the_pasid_of_the_aux_domain()
    {
        var driver = new AcmeWqDriver(_t.Iommu, _t.Parent);
        Mock<IMdevDevice> mdev = NewMdev();
        driver.Create(mdev.Object).ThrowIfError();
        IDomain domain = _t.AttachAuxDomain();
        mdev.Setup(m => m.GetIommuDomain()).Returns(domain);

        Assert.Equal(Errno.None, driver.OpenDevice(mdev.Object));

        byte[] reg = new byte[4];
        Assert.Equal(4, driver.Read(mdev.Object, reg, AcmeWqDriver.PasidRegister));
        Assert.Equal(_t.Iommu.AuxGetPasid(domain, _t.Parent), BinaryPrimitives.ReadInt32LittleEndian(reg));
    }

    [Fact]
    public void Open_before_vfio_set_iommu_is_einval()
    {
        var driver = new AcmeWqDriver(_t.Iommu, _t.Parent);
        Mock<IMdevDevice> mdev = NewMdev();
        driver.Create(mdev.Object).ThrowIfError();

        Assert.Equal(Errno.EINVAL, driver.OpenDevice(mdev.Object));
    }
}
