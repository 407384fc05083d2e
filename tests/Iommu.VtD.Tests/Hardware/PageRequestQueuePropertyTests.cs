using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Page requests and page group responses over random sequences, against a reference model of the descriptor
/// bits the unit writes in the page request queue and of the device's outstanding requests.
/// </summary>
public sealed class PageRequestQueuePropertyTests
{
    private const uint Pasid = 0x2A;
    private const ushort Rid = 0x0300;

    /// <summary>
    /// Each request is queued as the descriptor the reference encodes: type 1, PP, RID, PASID, and ER/PM only with a
    /// PASID (they travel in its prefix); R, W, LPIG, PRGI and the page; the upper half zero.
    /// </summary>
    [Fact]
    public void Property_every_page_request_is_queued_with_the_reference_descriptor_bits()
    {
        Gen<(bool, uint, ulong, int, int)> message = Gen.Select(Gen.Bool, Gen.UInt[0, 0xF_FFFF], Gen.ULong[0, (1UL << 57) - 1], Gen.Int[0, 15], Gen.Int[0, 0x1FF]);
        message.Array[1, 60].Sample(messages =>
        {
            using var r = new AtsRig();
            foreach ((bool hasPasid, uint pasid, ulong address, int bits, int prgi) in messages)
            {
                bool read = (bits & 1) != 0, write = (bits & 2) != 0, execute = (bits & 4) != 0, privileged = (bits & 8) != 0;
                bool last = (prgi & 1) != 0;
                ulong at = r.Pqt;
                Assert.True(r.Unit.PageRequest(r.Dev, new PageRequestMessage(hasPasid ? pasid : null, address, read, write, execute, privileged, prgi, last)));
                ulong q0 = 1 | (hasPasid ? 1UL << 8 : 0) | ((ulong)Rid << 16) | ((ulong)(hasPasid ? pasid : 0) << 32)
                    | (hasPasid && execute ? 1UL << 52 : 0) | (hasPasid && privileged ? 1UL << 53 : 0);
                ulong q1 = (address & ~0xFFFUL) | (read ? 1UL : 0) | (write ? 2UL : 0) | (last ? 4UL : 0) | ((ulong)prgi << 3);
                Assert.Equal((q0, q1, 0UL, 0UL), r.Descriptor(at));
                r.Pqh = r.Pqt; // software consumed it
            }
        }, iter: 100);
    }

    /// <summary>
    /// Random device reads of absent pages (each a page request with the device's next group index, while PRI is
    /// enabled) and responses (random codes, the index of an outstanding group or any other, with the requests'
    /// PASID, another one or none): Success and Invalid Request answer the outstanding requests of that index (and
    /// PASID, when the response has one); any other code (Response Failure) fails every outstanding request and disables
    /// PRI. The device then reports pending, failed, a new request or a fault exactly as the reference says.
    /// </summary>
    [Fact]
    public void Property_responses_answer_the_device_s_outstanding_requests_as_the_reference_model_says()
    {
        Gen.Select(Gen.Int[0, 7], Gen.Int[0, 2], Gen.Int[0, 15], Gen.Int[0, 0x1FF]).Array[1, 40].Sample(ops =>
        {
            using var r = new AtsRig();
            r.Fl.Entry(Pasid, 9);
            var outstanding = new Dictionary<int, (int Prgi, int? Code)>(); // page -> its request
            bool pri = true;
            // The first operation is a read: the unit routes responses only to a device it has heard from.
            foreach ((int page, int pasidKind, int code, int anyIndex) in ops.Prepend((0, 0, 0, 0)))
            {
                ulong va = 0x10_0000 + ((ulong)page * 0x1000);
                if (code < 8)
                {
                    // A read: the device either waits, learns the answer, or asks (again).
                    DmaStatus status = r.Dev.AtsDmaRead(Pasid, va, new byte[8]).Status;
                    DmaStatus expected;
                    if (outstanding.TryGetValue(page, out (int Prgi, int? Code) req) && req.Code is null)
                    {
                        expected = DmaStatus.PageRequestPending;
                    }
                    else if (outstanding.ContainsKey(page) && req.Code != 0)
                    {
                        outstanding.Remove(page);
                        expected = DmaStatus.PageRequestFailed;
                    }
                    else
                    {
                        outstanding.Remove(page);
                        expected = pri ? DmaStatus.PageRequestPending : DmaStatus.Fault;
                        if (pri)
                        {
                            (ulong q0, ulong q1, _, _) = r.Descriptor(r.Pqt - 32);
                            Assert.Equal(va, q1 & ~0xFFFUL);
                            Assert.Equal(1UL | (1UL << 8) | ((ulong)Rid << 16) | ((ulong)Pasid << 32), q0);
                            outstanding[page] = ((int)((q1 >> 3) & 0x1FF), null);
                            r.Pqh = r.Pqt;
                        }
                    }

                    Assert.True(expected == status, $"read of page {page}: {status}, expected {expected}");
                }
                else
                {
                    // A response: code 0 or 1, or a failure; the index of some outstanding request or any index.
                    int rc = code == 8 ? 0 : code == 9 ? 1 : code - 8;
                    List<int> pending = [.. outstanding.Where(e => e.Value.Code is null).Select(e => e.Value.Prgi)];
                    int prgi = pending.Count > 0 && (anyIndex & 1) == 0 ? pending[anyIndex / 2 % pending.Count] : anyIndex;
                    uint? pasid = pasidKind switch { 0 => Pasid, 1 => Pasid + 1, _ => null };
                    r.Respond(pasid, prgi, rc);
                    Assert.Equal(0u, r.B.Fsts & (1u << 4));
                    foreach (int p in outstanding.Keys.ToList())
                    {
                        (int Prgi, int? Code) q = outstanding[p];
                        if (q.Code is null && (rc > 1 || (q.Prgi == prgi && pasid is null or Pasid)))
                        {
                            outstanding[p] = (q.Prgi, rc);
                        }
                    }

                    pri &= rc <= 1;
                }

                Assert.Equal(pri, r.Dev.PriEnabled);
                Assert.Equal(!outstanding.Values.Any(v => v.Code is null), r.Dev.WaitForPageGroupResponses(TimeSpan.Zero));
            }
        }, iter: 100);
    }
}
