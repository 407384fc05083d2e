using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The page request queue (pasid-sva.md §1.8): registers, descriptor bytes, the full-queue and overflow
/// rules, the event rule (invariants 10 and 11) and page group responses reaching the device.
/// </summary>
public class PageRequestQueueTests
{
    private const uint Pasid = 0x2A;

    [Fact]
    public void Ecap_reports_dt_prs_pds_and_the_registers_reset_as_decided()
    {
        using var r = new AtsRig();
        Assert.Equal((1UL << 2) | (1UL << 29) | (1UL << 42), r.B.Ecap & ((1UL << 2) | (1UL << 29) | (1UL << 42)));
        using var fresh = new VtdBench(r.Config);
        Assert.Equal(0UL, fresh.Unit.Read64(0xC0));
        Assert.Equal(0UL, fresh.Unit.Read64(0xC8));
        Assert.Equal(0UL, fresh.Unit.Read64(0xD0));
        Assert.Equal(0u, fresh.Unit.Read32(0xDC));
        Assert.Equal(0x8000_0000u, fresh.Unit.Read32(0xE0));

        // Write masks: PQH/PQT 18:5, PQA base | PQS, PEADDR 31:2, PEDATA 15:0, PECTL IM only.
        fresh.Unit.Write64(0xC0, ulong.MaxValue);
        fresh.Unit.Write64(0xC8, ulong.MaxValue);
        fresh.Unit.Write64(0xD0, ulong.MaxValue);
        fresh.Unit.Write32(0xE4, uint.MaxValue);
        fresh.Unit.Write32(0xE8, uint.MaxValue);
        fresh.Unit.Write32(0xE0, uint.MaxValue);
        Assert.Equal(0x7FFE0UL, fresh.Unit.Read64(0xC0));
        Assert.Equal(0x7FFE0UL, fresh.Unit.Read64(0xC8));
        Assert.Equal(0xFFFF_FFFF_FFFF_F007UL, fresh.Unit.Read64(0xD0));
        Assert.Equal(0xFFFFu, fresh.Unit.Read32(0xE4));
        Assert.Equal(0xFFFF_FFFCu, fresh.Unit.Read32(0xE8));
        Assert.Equal(0x8000_0000u, fresh.Unit.Read32(0xE0));
    }

    [Fact]
    public void Without_prs_the_registers_read_zero_and_requests_go_nowhere()
    {
        using var r = new AtsRig(config: VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true });
        Assert.Equal(0UL, r.B.Ecap & (1UL << 29));
        r.Unit.Write64(0xD0, 0x0200_0000);
        Assert.Equal(0UL, r.Unit.Read64(0xD0));
        Assert.Equal(0u, r.Unit.Read32(0xE0));
        Assert.False(r.Request(Pasid, 0x1000));
        Assert.Equal(0u, r.B.Fsts);
    }

    [Fact]
    public void A_request_writes_the_specs_descriptor_bytes_at_pqt_and_advances_pqt()
    {
        using var r = new AtsRig();
        Assert.True(r.Request(Pasid, 0x7F12_3456_7ABC, read: true, write: true, prgi: 5, last: true));
        Assert.Equal((0x0000_002A_0300_0101UL, 0x0000_7F12_3456_702FUL, 0UL, 0UL), r.Descriptor(0));
        Assert.Equal(32UL, r.Pqt);
        Assert.Equal(0UL, r.Pqh);
        Assert.Equal(1u, r.Prs);

        // Without PASID: PP = 0, PASID field 0; a stop marker (LPIG, no access) is queued like any request.
        Assert.True(r.Request(null, 0x5000, read: false, write: false, prgi: 0x1FF, last: true));
        Assert.Equal((0x0000_0000_0300_0001UL, 0x5000UL | 4 | (0x1FFUL << 3), 0UL, 0UL), r.Descriptor(32));
        Assert.Equal(64UL, r.Pqt);
    }

    [Fact]
    public void The_event_fires_on_ppr_rising_only_and_again_after_software_clears_it()
    {
        using var r = new AtsRig();
        r.Unmask(data: 0x55, address: 0xFEE0_2000);
        r.Request(Pasid, 0x1000);
        Assert.Equal([(0xFEE0_2000UL, 0x55u)], r.Events);
        r.Request(Pasid, 0x2000);
        Assert.Single(r.Events);
        Assert.Equal(0u, r.Pectl & 0x4000_0000);

        // Linux: consume, move PQH, clear PPR (w1c).
        r.Pqh = r.Pqt;
        r.Unit.Write32(0xDC, 1);
        Assert.Equal(0u, r.Prs);
        r.Request(Pasid, 0x3000);
        Assert.Equal(2, r.Events.Count);
    }

    [Fact]
    public void A_masked_event_leaves_ip_set_until_unmasked_or_cleared()
    {
        using var r = new AtsRig();
        r.Request(Pasid, 0x1000);
        Assert.Empty(r.Events);
        Assert.Equal(0xC000_0000u, r.Pectl);
        r.Unmask();
        Assert.Single(r.Events);
        Assert.Equal(0u, r.Pectl);

        // Clearing PPR while masked with IP set clears IP: no event on unmask.
        r.Unit.Write32(0xDC, 1);
        r.Unit.Write32(0xE0, 0x8000_0000);
        r.Request(Pasid, 0x2000);
        Assert.Equal(0xC000_0000u, r.Pectl);
        r.Unit.Write32(0xDC, 1);
        Assert.Equal(0x8000_0000u, r.Pectl);
        r.Unit.Write32(0xE0, 0);
        Assert.Single(r.Events);
    }

    [Fact]
    public void A_full_queue_keeps_one_slot_free_sets_pro_and_queues_nothing_until_software_clears_it()
    {
        using var r = new AtsRig();
        for (int i = 0; i < 127; i++)
        {
            Assert.True(r.Request(Pasid, (ulong)(i + 1) << 12, prgi: i));
        }

        Assert.Equal(127UL * 32, r.Pqt);
        Assert.False(r.Request(Pasid, 0x80_0000));
        Assert.Equal(3u, r.Prs);
        Assert.Equal(127UL * 32, r.Pqt);

        // While PRO is set nothing is queued, even with room.
        r.Pqh = 64;
        Assert.False(r.Request(Pasid, 0x81_0000));
        Assert.Equal(127UL * 32, r.Pqt);

        // Software drains (PQH = PQT) and clears PRO and PPR: requests queue again, wrapping to slot 127 and 0.
        r.Pqh = r.Pqt;
        r.Unit.Write32(0xDC, 3);
        Assert.True(r.Request(Pasid, 0x82_0000, prgi: 7));
        Assert.Equal(0UL, r.Pqt);
        Assert.Equal(0x82_0000UL | 1 | 4 | (7UL << 3), r.Descriptor(127 * 32).Q1);
        Assert.True(r.Request(Pasid, 0x83_0000));
        Assert.Equal(32UL, r.Pqt);
    }

    [Fact]
    public void Overflow_sends_no_response_by_default_and_the_configured_code_when_set()
    {
        foreach (int? code in new int?[] { null, 1 })
        {
            using var r = new AtsRig(config: VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true, PageRequestOverflowResponse = code });
            r.Pqh = 32;  // the ring is full at once (PQT + 32 == PQH)
            r.Fl.Entry(Pasid, 9);
            DmaResult first = r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]);
            Assert.Equal(DmaStatus.PageRequestPending, first.Status);
            Assert.Equal(2u, r.Prs);
            DmaResult retry = r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]);
            Assert.Equal(code is null ? DmaStatus.PageRequestPending : DmaStatus.PageRequestFailed, retry.Status);
        }
    }

    [Fact]
    public void Pre_clear_faults_0x47_and_queues_nothing()
    {
        using var r = new AtsRig(pre: false);
        Assert.False(r.Request(Pasid, 0x1000));
        Assert.Equal(0UL, r.Pqt);
        Assert.Equal(0u, r.Prs);
        (ulong lo, ulong hi) = r.B.FaultRecord(0);
        Assert.Equal(0x47UL, (hi >> 32) & 0xFF);
        Assert.Equal(0x0300UL, hi & 0xFFFF);
        Assert.Equal(0x1000UL, lo);
    }

    [Fact]
    public void A_group_response_descriptor_reaches_the_device_and_a_retry_after_success_translates_again()
    {
        using var r = new AtsRig();
        r.Fl.Entry(Pasid, 9);
        ulong iova = 0x7F12_3456_7000;
        Assert.Equal(DmaStatus.PageRequestPending, r.Dev.AtsDmaRead(Pasid, iova, new byte[8]).Status);
        (ulong q0, ulong q1, _, _) = r.Descriptor(0);
        Assert.Equal(0x0000_002A_0300_0101UL, q0);
        int prgi = (int)((q1 >> 3) & 0x1FF);
        Assert.Equal(iova | 1 | 4, q1 & ~(0x1FFUL << 3));

        // Still pending before the response: no second request.
        Assert.Equal(DmaStatus.PageRequestPending, r.Dev.AtsDmaRead(Pasid, iova, new byte[8]).Status);
        Assert.Equal(32UL, r.Pqt);

        // Software maps the page and answers Success (Linux's bytes); the retry translates and reads it.
        r.Fl.Map(iova, 0x0055_5000);
        r.B.Memory.WriteUInt64(0x0055_5008, 0x1122_3344_5566_7788);
        r.Respond(Pasid, prgi, 0);
        Assert.Equal(0UL, r.B.Fsts & 0x10);
        byte[] buf = new byte[8];
        DmaResult ok = r.Dev.AtsDmaRead(Pasid, iova + 8, buf);
        Assert.True(ok.IsOk);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(buf));
        Assert.Equal(1, r.Dev.AtcCount);
    }

    [Fact]
    public void Invalid_request_fails_the_access_once_and_response_failure_disables_pri()
    {
        using var r = new AtsRig();
        r.Fl.Entry(Pasid, 9);
        Assert.Equal(DmaStatus.PageRequestPending, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);
        r.Respond(Pasid, 0, 1);
        Assert.Equal(DmaStatus.PageRequestFailed, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);
        Assert.Equal(DmaStatus.PageRequestPending, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);
        r.Respond(Pasid, 1, 0xF);
        Assert.False(r.Dev.PriEnabled);
        Assert.Equal(DmaStatus.PageRequestFailed, r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]).Status);

        // Without PRI the refused page is a fault the unit did not record.
        DmaResult f = r.Dev.AtsDmaRead(Pasid, 0x1000, new byte[8]);
        Assert.Equal(DmaStatus.Fault, f.Status);
        Assert.Equal(DmaFaultReason.None, f.FaultReason);
        Assert.Equal(0u, r.B.Fsts & 2);
    }

    [Fact]
    public void Group_response_reserved_bits_and_pdp_are_queue_errors_and_type_9_needs_prs()
    {
        using var r = new AtsRig();
        r.B.Submit(9 | (1UL << 4) | (1UL << 5) | (0x0300UL << 16) | ((ulong)Pasid << 32), 4);
        Assert.Equal(0x10u, r.B.Fsts & 0x10);
        Assert.Equal(4UL, r.Unit.Read64(0xB0) & 0xF);

        using var n = new AtsRig(config: VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true });
        n.Respond(Pasid, 0, 0);
        Assert.Equal(3UL, n.Unit.Read64(0xB0) & 0xF);
    }

    [Fact]
    public void Wait_descriptor_pd_needs_pds()
    {
        using var r = new AtsRig();
        r.B.Submit(5 | (1UL << 7));
        Assert.Equal(0u, r.B.Fsts & 0x10);
        using var n = new AtsRig(config: VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true });
        n.B.Submit(5 | (1UL << 7));
        Assert.Equal(0x10u, n.B.Fsts & 0x10);
    }

    private enum Op
    {
        Request,
        Consume,
        ClearPpr,
        ClearPro,
        ClearBoth,
        Mask,
        Unmask,
    }

    /// <summary>
    /// Invariants 10 and 11 over random sequences of page requests, software head moves, PRS clears and
    /// mask changes, against a model of the ring: PQH/PQT in range and aligned, one slot always free,
    /// nothing queued while PRO, every queued descriptor carries its request, and an event exactly when
    /// the rule says (PPR or PRO rising from neither, IM clear; a masked one waits in IP).
    /// </summary>
    [Fact]
    public void The_ring_and_the_event_follow_a_model_over_random_sequences()
    {
        Gen.Select(Gen.Enum<Op>(), Gen.Int[0, 200], Gen.Bool).Array[1, 400]
            .Sample(ops =>
            {
                using var r = new AtsRig();
                const ulong size = 4096;
                ulong head = 0, tail = 0;
                bool ppr = false, pro = false, ip = false, masked = true;
                int events = 0, n = 0;
                foreach ((Op op, int k, bool flag) in ops)
                {
                    switch (op)
                    {
                        case Op.Request:
                            ulong addr = (ulong)(n + 1) << 12;
                            bool queued = r.Request(flag ? Pasid : null, addr, read: true, write: flag, prgi: n & 0x1FF, last: (k & 1) == 1);
                            bool expect = !pro && (tail + 32) % size != head;
                            Assert.Equal(expect, queued);
                            bool before = ppr || pro;
                            if (expect)
                            {
                                (ulong q0, ulong q1, _, _) = r.Descriptor(tail);
                                Assert.Equal(addr, q1 & ~0xFFFUL);
                                Assert.Equal((ulong)(n & 0x1FF), (q1 >> 3) & 0x1FF);
                                Assert.Equal(flag, (q0 & 0x100) != 0);
                                tail = (tail + 32) % size;
                                ppr = true;
                            }
                            else if (!pro)
                            {
                                pro = true;
                            }

                            if (!before && (ppr || pro))
                            {
                                if (masked)
                                {
                                    ip = true;
                                }
                                else
                                {
                                    events++;
                                }
                            }

                            n++;
                            break;
                        case Op.Consume:
                            ulong pending = ((tail + size) - head) % size / 32;
                            head = (head + (32 * Math.Min((ulong)k, pending))) % size;
                            r.Pqh = head;
                            break;
                        case Op.ClearPpr or Op.ClearPro or Op.ClearBoth:
                            uint bits = op == Op.ClearPpr ? 1u : op == Op.ClearPro ? 2u : 3u;
                            r.Unit.Write32(0xDC, bits);
                            ppr &= (bits & 1) == 0;
                            pro &= (bits & 2) == 0;
                            ip &= ppr || pro;
                            break;
                        case Op.Mask:
                            r.Unit.Write32(0xE0, 0x8000_0000);
                            masked = true;
                            break;
                        case Op.Unmask:
                            r.Unit.Write32(0xE0, 0);
                            masked = false;
                            if (ip)
                            {
                                ip = false;
                                events++;
                            }

                            break;
                    }

                    Assert.Equal(head, r.Pqh);
                    Assert.Equal(tail, r.Pqt);
                    Assert.True(r.Pqt < size && r.Pqt % 32 == 0);
                    Assert.Equal((ppr ? 1u : 0) | (pro ? 2u : 0), r.Prs);
                    Assert.Equal((masked ? 0x8000_0000u : 0) | (ip ? 0x4000_0000u : 0), r.Pectl);
                    Assert.Equal(events, r.Events.Count);
                }
            }, iter: 60);
    }
}
